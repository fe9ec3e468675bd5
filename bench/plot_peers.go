package main

import (
	"fmt"
	"math"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// plotMemory draws every server's RSS against its subscribed idle
// connections (the baseline at 0, then each plateau), all on one axis
// pair, and saves it as a PNG.
func plotMemory(res *peersResult, file string) error {
	p := plot.New()
	p.Title.Text = "Server RSS vs idle subscribed connections"
	p.X.Label.Text = "idle connections (one channel)"
	p.Y.Label.Text = "RSS (MiB)"
	p.Add(plotter.NewGrid())
	var lines []any
	top := 1.0
	for _, r := range res.Peers {
		if len(r.Plateaus) == 0 {
			continue
		}
		pts := plotter.XYs{{X: 0, Y: float64(r.BaselineRSS) / (1 << 20)}}
		for _, pl := range r.Plateaus {
			pts = append(pts, plotter.XY{X: float64(pl.Conns), Y: float64(pl.RSSBytes) / (1 << 20)})
		}
		lines = append(lines, fmt.Sprintf("%s (%.1f KiB/conn)", r.Name, r.BytesPerConn/1024), pts)
		for _, pt := range pts {
			top = math.Max(top, pt.Y)
		}
	}
	// From zero, with headroom above the highest line for the legend.
	p.Y.Min, p.Y.Max = 0, top*1.45
	return savePlot(p, lines, file, true)
}

// plotLatency draws every server's publish→receive latency CDF (x: latency
// on a log axis, y: fraction of messages) on one axis pair and saves it.
func plotLatency(res *peersResult, file string) error {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Publish→receive latency, %d msg/s over %d personal channels", res.LatRate, res.LatConns)
	p.X.Label.Text = "latency (ms, log scale)"
	p.Y.Label.Text = "fraction of messages received"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Y.Min, p.Y.Max = 0, 1
	p.Add(plotter.NewGrid())
	var lines []any
	for _, r := range res.Peers {
		if r.Latency == nil || len(r.Latency.CDF) == 0 {
			continue
		}
		var pts plotter.XYs
		for _, c := range r.Latency.CDF {
			// Log axes cannot show 0: the histogram's floor is 1 µs.
			pts = append(pts, plotter.XY{X: math.Max(float64(c.Us), 1) / 1000, Y: c.Q})
		}
		lines = append(lines, fmt.Sprintf("%s (p50 %.2f, p99 %.2f ms)", r.Name, float64(r.Latency.P50Us)/1000, float64(r.Latency.P99Us)/1000), pts)
	}
	return savePlot(p, lines, file, false)
}

// savePlot adds the named lines (with points when points is set) and
// writes a 9×6 inch PNG.
func savePlot(p *plot.Plot, lines []any, file string, points bool) error {
	if len(lines) == 0 {
		return fmt.Errorf("plot %s: no data", file)
	}
	add := plotutil.AddLines
	if points {
		add = plotutil.AddLinePoints
	}
	if err := add(p, lines...); err != nil {
		return fmt.Errorf("plot %s: %w", file, err)
	}
	p.Legend.Top = true
	p.Legend.Left = true
	if err := p.Save(9*vg.Inch, 6*vg.Inch, file); err != nil {
		return fmt.Errorf("plot %s: %w", file, err)
	}
	return nil
}
