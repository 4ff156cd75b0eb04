package domain

// reminderEvents lists the reminder events (expiry and claim-opening).
func reminderEvents() []Event {
	return []Event{}
}
