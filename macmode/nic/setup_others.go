//go:build !linux

package nic

import "errors"

var errUnsupported = errors.New("macmode: NIC setup needs Linux")

// Setup is not supported on this system.
func Setup(Config) error { return errUnsupported }

// Restore is not supported on this system.
func Restore(string, string) error { return errUnsupported }
