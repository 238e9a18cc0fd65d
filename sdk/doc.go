// Package sdk is the public Go device SDK of coapgate: a small CoAP client for
// devices that authenticate with a token (docs/protocol.md §3.1–3.2, dialect A) and
// publish MQTT-style topics over CoAP on UDP.
//
// The client speaks RFC 7252 on a plain *net.UDPConn and uses go-coap only as
// a codec. It implements what a device needs and nothing more:
//
//   - confirmable requests with the RFC 7252 §4.2 retransmission schedule
//     (TransmissionParams), piggybacked and separate (§5.2.2) responses,
//     duplicate separate responses acknowledged again;
//   - non-confirmable publishes (§4.3), optionally waiting for a NON response;
//   - RFC 7959 Block1 uploads of large request bodies, 4.13 reported as
//     *TooLargeError;
//   - POST /auth with the dialect-A signature (JSON or CBOR bodies), the
//     token carried in option 2088 (or 61) and the platform message ID read
//     from option 2090 of the response;
//   - one automatic re-authentication and retry when a publish is answered
//     with 4.01 Unauthorized and the credentials are known;
//   - the symmetric-encryption mode (WithSymmetric, docs/protocol.md §3.4; the
//     gateway's port 5682): seq in /auth, the session key derived from the
//     returned random, AES-128-CBC payloads, the next sequence number in
//     option 2089 and decrypted replies, transparently to Publish.
//
// A Client owns one reader goroutine (stopped by Close) and is safe for
// concurrent use: ACKs are matched by Message ID, responses by CoAP token.
// The package does not log; every failure is returned as an error. Non-2.xx
// answers are *StatusError (use errors.As); a request whose retransmissions
// were all unanswered fails with ErrTimeout.
package sdk
