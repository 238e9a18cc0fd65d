package coapx

import "crypto/rand"

func randRead(b []byte) { _, _ = rand.Read(b) }
