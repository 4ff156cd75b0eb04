package domain

// Notification is an event that tells a shopper something (expiry and
// claim-opening reminders). Besides its own topic, the outbound publisher
// sends it on the notifications topic under NotificationName, keyed by
// Recipient.
type Notification interface {
	Event
	// NotificationName is the explicit, versioned name of the notification
	// (e.g. coupon.expiring_soon.v1); never derived from the Go type.
	NotificationName() string
	// Recipient is the id of the user to notify.
	Recipient() string
}
