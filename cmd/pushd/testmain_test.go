package main_test

import (
	"os"
	"testing"

	"github.com/pushd/pushd/internal/pushdtest"
)

// TestMain builds cmd/pushd once for every test here (pushdtest.Main), so
// that each pushdtest.Build does not link a binary of its own.
func TestMain(m *testing.M) { os.Exit(pushdtest.Main(m)) }
