package main

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"math"
	"os"
	"strconv"
)

// plotLegend describes the PNG (also written to the JSON result).
var plotLegend = []string{
	"x: seconds since the claim window opened (per second, by completion time); dashed: open (black), sold out (green)",
	"top panel, requests per second: blue = all requests, orange = claims attempted, green = claims accepted (new coupons)",
	"bottom panel, p99 latency in ms per second: red = claims, purple = reads (me, product, quote, claimable), grey = p50 of all",
}

var (
	colBlue   = color.RGBA{31, 119, 180, 255}
	colOrange = color.RGBA{255, 127, 14, 255}
	colGreen  = color.RGBA{44, 160, 44, 255}
	colRed    = color.RGBA{214, 39, 40, 255}
	colPurple = color.RGBA{148, 103, 189, 255}
	colGrey   = color.RGBA{150, 150, 150, 255}
	colAxis   = color.RGBA{40, 40, 40, 255}
	colGrid   = color.RGBA{228, 228, 228, 255}
	colBlack  = color.RGBA{0, 0, 0, 255}
)

type series struct {
	name string
	col  color.RGBA
	ys   []float64
}

type panel struct {
	x0, y0, x1, y1 int // plot area
	tMin, tMax     float64
	yMax           float64
}

func (p panel) px(t float64) int {
	return p.x0 + int(math.Round((t-p.tMin)/(p.tMax-p.tMin)*float64(p.x1-p.x0)))
}

func (p panel) py(v float64) int {
	return p.y1 - int(math.Round(v/p.yMax*float64(p.y1-p.y0)))
}

// niceMax rounds v up to 1, 2 or 5 times a power of ten; step is a fifth of it.
func niceMax(v float64) (top, step float64) {
	if v <= 0 {
		return 1, 0.2
	}
	e := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*e >= v {
			return m * e, m * e / 5
		}
	}
	return 10 * e, 2 * e
}

func fmtNum(v float64) string {
	switch {
	case v == 0:
		return "0"
	case math.Abs(v) >= 10000 && math.Mod(v, 1000) == 0:
		return strconv.FormatFloat(v/1000, 'f', -1, 64) + "K"
	case math.Abs(v) >= 10 || v == math.Trunc(v):
		return strconv.FormatFloat(v, 'f', 0, 64)
	default:
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
}

// writePlot draws the throughput and p99 latency per second.
func writePlot(path string, res *Result) error {
	const W, H, scale = 1400, 900, 2
	img := image.NewRGBA(image.Rect(0, 0, W, H))
	draw.Draw(img, img.Bounds(), &image.Uniform{color.White}, image.Point{}, draw.Src)

	// The answers that came in after the end of the sale window (requests
	// in flight) would draw a misleading drop: stop at the window.
	ser := res.Series
	for len(ser) > 1 && res.DurationS > 0 && float64(ser[len(ser)-1].T) >= res.DurationS {
		ser = ser[:len(ser)-1]
	}
	n := len(ser)
	ts := make([]float64, n)
	all, attempted, accepted := make([]float64, n), make([]float64, n), make([]float64, n)
	p99c, p99r, p50 := make([]float64, n), make([]float64, n), make([]float64, n)
	for i, s := range ser {
		ts[i] = float64(s.T) + 0.5
		all[i], attempted[i], accepted[i] = float64(s.Requests), float64(s.Claims), float64(s.Accepted)
		p99c[i], p99r[i], p50[i] = s.P99ClaimMs, s.P99ReadMs, s.P50Ms
		// No such request that second: no point (a gap, not a zero).
		if s.Claims == 0 {
			p99c[i] = math.NaN()
		}
		if s.Requests-s.Claims == 0 {
			p99r[i] = math.NaN()
		}
		if s.Requests == 0 {
			p50[i] = math.NaN()
		}
	}
	tMin, tMax := float64(ser[0].T), float64(ser[n-1].T+1)
	if tMax-tMin < 1 {
		tMax = tMin + 1
	}

	title := fmt.Sprintf("couponsd loadgen: %d shoppers, stock %d, limit %d, %d conns, mix %s", res.Users, res.Stock, res.Limit, res.Conns, res.Mix)
	drawText(img, 90, 14, title, scale, colBlack)
	sub := fmt.Sprintf("batch %s: accepted %d in the first second, %.0f claims/s attempted", res.BatchID, res.Claims.AcceptedFirstSec, res.Claims.AttemptedPerSec)
	if res.Claims.SoldOutAfterS != nil {
		sub += fmt.Sprintf(", sold out after %.2fs", *res.Claims.SoldOutAfterS)
	}
	drawText(img, 90, 36, sub, 1, colAxis)

	top := panel{x0: 110, y0: 90, x1: W - 40, y1: 440, tMin: tMin, tMax: tMax}
	bot := panel{x0: 110, y0: 530, x1: W - 40, y1: 820, tMin: tMin, tMax: tMax}
	var marks []vmark
	marks = append(marks, vmark{0, colBlack})
	if res.Claims.SoldOutAfterS != nil {
		marks = append(marks, vmark{*res.Claims.SoldOutAfterS, colGreen})
	}
	drawPanel(img, &top, "requests/s", marks, []series{
		{"all requests/s", colBlue, all}, {"claims attempted/s", colOrange, attempted}, {"claims accepted/s", colGreen, accepted},
	}, ts)
	drawPanel(img, &bot, "latency ms", marks, []series{
		{"p99 claims", colRed, p99c}, {"p99 reads", colPurple, p99r}, {"p50 all", colGrey, p50},
	}, ts)
	label := "seconds since the sale opened"
	drawText(img, (bot.x0+bot.x1)/2-textWidth(label, scale)/2, bot.y1+36, label, scale, colAxis)

	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, img); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

type vmark struct {
	t   float64
	col color.RGBA
}

func drawPanel(img *image.RGBA, p *panel, ylabel string, marks []vmark, ss []series, ts []float64) {
	vmax := 0.0
	for _, s := range ss {
		for _, v := range s.ys {
			if !math.IsNaN(v) {
				vmax = max(vmax, v)
			}
		}
	}
	top, step := niceMax(vmax * 1.05)
	p.yMax = top
	// Grid and y ticks.
	for v := 0.0; v <= top+step/2; v += step {
		y := p.py(v)
		hline(img, p.x0, p.x1, y, colGrid)
		lbl := fmtNum(v)
		drawText(img, p.x0-10-textWidth(lbl, 2), y-7, lbl, 2, colAxis)
	}
	// x ticks: every 1, 2, 5 or 10 s.
	span := p.tMax - p.tMin
	xstep := 1.0
	for _, s := range []float64{1, 2, 5, 10, 20, 30, 60, 120, 300, 600} {
		xstep = s
		if span/s <= 16 {
			break
		}
	}
	for t := math.Ceil(p.tMin/xstep) * xstep; t <= p.tMax; t += xstep {
		x := p.px(t)
		vline(img, x, p.y0, p.y1, colGrid)
		vline(img, x, p.y1, p.y1+6, colAxis)
		lbl := fmtNum(t)
		drawText(img, x-textWidth(lbl, 2)/2, p.y1+10, lbl, 2, colAxis)
	}
	// Axes.
	hline(img, p.x0, p.x1, p.y1, colAxis)
	vline(img, p.x0, p.y0, p.y1, colAxis)
	drawTextUp(img, 18, (p.y0+p.y1)/2+textWidth(ylabel, 2)/2, ylabel, 2, colAxis)
	for _, m := range marks {
		if m.t >= p.tMin && m.t <= p.tMax {
			dashed(img, p.px(m.t), p.y0, p.y1, m.col)
		}
	}
	// Lines.
	for _, s := range ss {
		for i, v := range s.ys {
			switch {
			case math.IsNaN(v):
			case i > 0 && !math.IsNaN(s.ys[i-1]):
				thickLine(img, p.px(ts[i-1]), p.py(s.ys[i-1]), p.px(ts[i]), p.py(v), s.col)
			default: // a lone point until the next one
				thickLine(img, p.px(ts[i]), p.py(v), p.px(ts[i]), p.py(v), s.col)
			}
		}
	}
	// Legend, top right, on a white box.
	lw := 0
	for _, s := range ss {
		lw = max(lw, textWidth(s.name, 2))
	}
	bx := p.x1 - lw - 60
	by := p.y0 + 8
	fill(img, image.Rect(bx-8, by-6, p.x1-6, by+len(ss)*22+2), color.White)
	rect(img, image.Rect(bx-8, by-6, p.x1-6, by+len(ss)*22+2), colAxis)
	for i, s := range ss {
		y := by + i*22
		fill(img, image.Rect(bx, y+4, bx+28, y+10), s.col)
		drawText(img, bx+38, y, s.name, 2, colAxis)
	}
}

func hline(img *image.RGBA, x0, x1, y int, c color.Color) {
	for x := x0; x <= x1; x++ {
		img.Set(x, y, c)
	}
}

func vline(img *image.RGBA, x, y0, y1 int, c color.Color) {
	for y := y0; y <= y1; y++ {
		img.Set(x, y, c)
	}
}

func dashed(img *image.RGBA, x, y0, y1 int, c color.Color) {
	for y := y0; y <= y1; y++ {
		if (y-y0)%10 < 6 {
			img.Set(x, y, c)
			img.Set(x+1, y, c)
		}
	}
}

func fill(img *image.RGBA, r image.Rectangle, c color.Color) {
	draw.Draw(img, r, &image.Uniform{c}, image.Point{}, draw.Src)
}

func rect(img *image.RGBA, r image.Rectangle, c color.Color) {
	hline(img, r.Min.X, r.Max.X, r.Min.Y, c)
	hline(img, r.Min.X, r.Max.X, r.Max.Y, c)
	vline(img, r.Min.X, r.Min.Y, r.Max.Y, c)
	vline(img, r.Max.X, r.Min.Y, r.Max.Y, c)
}

// thickLine draws a 3-pixel-wide line (Bresenham with a square pen).
func thickLine(img *image.RGBA, x0, y0, x1, y1 int, c color.Color) {
	dx, dy := abs(x1-x0), -abs(y1-y0)
	sx, sy := 1, 1
	if x0 > x1 {
		sx = -1
	}
	if y0 > y1 {
		sy = -1
	}
	e := dx + dy
	for {
		for oy := -1; oy <= 1; oy++ {
			for ox := -1; ox <= 1; ox++ {
				img.Set(x0+ox, y0+oy, c)
			}
		}
		if x0 == x1 && y0 == y1 {
			return
		}
		e2 := 2 * e
		if e2 >= dy {
			e += dy
			x0 += sx
		}
		if e2 <= dx {
			e += dx
			y0 += sy
		}
	}
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}
