package main

import (
	"flag"
	"fmt"

	"github.com/pushd/pushd/fanout"
)

// deflateFlags registers the permessage-deflate flags (README
// "permessage-deflate").
func deflateFlags(fs *flag.FlagSet, c *Config) {
	fs.StringVar(&c.DeflateChannels, "deflate-channels", "*", "comma-separated channel patterns whose pushes are compressed (permessage-deflate, once per publication) for clients that offer it; empty: never negotiate permessage-deflate")
	fs.IntVar(&c.DeflateMinSize, "deflate-min-size", fanout.DefaultDeflateMinSize, "smallest payload in bytes compressed for permessage-deflate clients; smaller pushes go plain")
	fs.IntVar(&c.DeflateLevel, "deflate-level", 1, "flate level for pushes, 1 (fastest) to 9 (smallest)")
}

// validateDeflate checks the permessage-deflate flags.
func (c *Config) validateDeflate() []error {
	var errs []error
	c.deflatePatterns = splitList(c.DeflateChannels)
	if c.DeflateMinSize < 0 {
		errs = append(errs, fmt.Errorf("-deflate-min-size must not be negative (got %d)", c.DeflateMinSize))
	}
	if c.DeflateLevel < 1 || c.DeflateLevel > 9 {
		errs = append(errs, fmt.Errorf("-deflate-level must be 1 to 9 (got %d)", c.DeflateLevel))
	}
	return errs
}

// deflateConfig maps the flags onto the hub's DeflateConfig.
func (c Config) deflateConfig() fanout.DeflateConfig {
	minSize := c.DeflateMinSize
	if minSize == 0 {
		minSize = -1 // fanout: zero selects its default, negative every size
	}
	return fanout.DeflateConfig{Channels: c.deflatePatterns, MinSize: minSize, Level: c.DeflateLevel}
}
