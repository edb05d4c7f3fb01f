// Package soak holds the bounded-time memory soak of the real binary:
// RSS, goroutines and secrets under sustained load with many keys.
package soak
