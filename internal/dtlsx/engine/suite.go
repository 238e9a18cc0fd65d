package engine

import (
	"crypto/sha1" //nolint:gosec // HMAC-SHA1 record MAC of the *_CBC_SHA suites
	"crypto/sha256"
	"fmt"
	"hash"
	"strings"

	"github.com/pion/dtls/v3/pkg/crypto/ciphersuite"
	"github.com/pion/dtls/v3/pkg/crypto/prf"
	"github.com/pion/dtls/v3/pkg/protocol/recordlayer"
)

// Cipher suite identifiers (IANA TLS Cipher Suites registry).
const (
	TLS_PSK_WITH_AES_128_CCM_8              uint16 = 0xC0A8 //nolint:revive // IANA names
	TLS_PSK_WITH_AES_128_CBC_SHA256         uint16 = 0x00AE //nolint:revive
	TLS_PSK_WITH_AES_128_CBC_SHA            uint16 = 0x008C //nolint:revive
	TLS_PSK_WITH_AES_256_CBC_SHA            uint16 = 0x008D //nolint:revive
	TLS_RSA_WITH_AES_128_CBC_SHA            uint16 = 0x002F //nolint:revive
	TLS_RSA_WITH_AES_256_CBC_SHA            uint16 = 0x0035 //nolint:revive
	TLS_RSA_WITH_AES_128_CBC_SHA256         uint16 = 0x003C //nolint:revive
	TLS_RSA_WITH_AES_256_CBC_SHA256         uint16 = 0x003D //nolint:revive
	TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 uint16 = 0xC02B //nolint:revive
	TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8      uint16 = 0xC0AE //nolint:revive
	tlsEmptyRenegotiationInfoSCSV           uint16 = 0x00FF
)

// RSASuites are the RSA key transport suites (RFC 5246), in the server's
// preference order; they need an RSA Config.Certificate.
var RSASuites = []uint16{
	TLS_RSA_WITH_AES_128_CBC_SHA256,
	TLS_RSA_WITH_AES_256_CBC_SHA256,
	TLS_RSA_WITH_AES_128_CBC_SHA,
	TLS_RSA_WITH_AES_256_CBC_SHA,
}

// ECDHESuites are the ECDHE-ECDSA suites, in the server's preference
// order; they need an ECDSA (P-256) certificate.
var ECDHESuites = []uint16{
	TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8,
}

// DefaultSuites is the server's preference order of PSK suites when
// Config.Suites is empty (after RSASuites when a certificate is configured).
var DefaultSuites = []uint16{
	TLS_PSK_WITH_AES_128_CCM_8,
	TLS_PSK_WITH_AES_128_CBC_SHA256,
	TLS_PSK_WITH_AES_128_CBC_SHA,
	TLS_PSK_WITH_AES_256_CBC_SHA,
}

// recordCipher protects records of one epoch in both directions; pion's
// ciphersuite.CCM and ciphersuite.CBC implement it.
type recordCipher interface {
	Encrypt(pkt *recordlayer.RecordLayer, raw []byte) ([]byte, error)
	Decrypt(h recordlayer.Header, in []byte) ([]byte, error)
}

// suite describes a cipher suite: key block sizes and how to build its
// record protection from the key block.
type suite struct {
	id       uint16
	name     string
	psk      bool
	ecdhe    bool // ECDHE_ECDSA (neither psk nor ecdhe: RSA key transport)
	aead     bool
	gcm      bool
	macLen   int
	keyLen   int
	ivLen    int
	mac      func() hash.Hash
	overhead int // worst-case record expansion
}

var suites = map[uint16]*suite{
	TLS_PSK_WITH_AES_128_CCM_8:              {id: TLS_PSK_WITH_AES_128_CCM_8, name: "TLS_PSK_WITH_AES_128_CCM_8", psk: true, aead: true, keyLen: 16, ivLen: 4, overhead: 8 + 8},
	TLS_PSK_WITH_AES_128_CBC_SHA256:         {id: TLS_PSK_WITH_AES_128_CBC_SHA256, name: "TLS_PSK_WITH_AES_128_CBC_SHA256", psk: true, macLen: 32, keyLen: 16, ivLen: 16, mac: sha256.New, overhead: 16 + 32 + 16},
	TLS_PSK_WITH_AES_128_CBC_SHA:            {id: TLS_PSK_WITH_AES_128_CBC_SHA, name: "TLS_PSK_WITH_AES_128_CBC_SHA", psk: true, macLen: 20, keyLen: 16, ivLen: 16, mac: sha1.New, overhead: 16 + 20 + 16},
	TLS_PSK_WITH_AES_256_CBC_SHA:            {id: TLS_PSK_WITH_AES_256_CBC_SHA, name: "TLS_PSK_WITH_AES_256_CBC_SHA", psk: true, macLen: 20, keyLen: 32, ivLen: 16, mac: sha1.New, overhead: 16 + 20 + 16},
	TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256: {id: TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, name: "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", ecdhe: true, aead: true, gcm: true, keyLen: 16, ivLen: 4, overhead: 8 + 16},
	TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8:      {id: TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8, name: "TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8", ecdhe: true, aead: true, keyLen: 16, ivLen: 4, overhead: 8 + 8},
	TLS_RSA_WITH_AES_128_CBC_SHA:            {id: TLS_RSA_WITH_AES_128_CBC_SHA, name: "TLS_RSA_WITH_AES_128_CBC_SHA", macLen: 20, keyLen: 16, ivLen: 16, mac: sha1.New, overhead: 16 + 20 + 16},
	TLS_RSA_WITH_AES_256_CBC_SHA:            {id: TLS_RSA_WITH_AES_256_CBC_SHA, name: "TLS_RSA_WITH_AES_256_CBC_SHA", macLen: 20, keyLen: 32, ivLen: 16, mac: sha1.New, overhead: 16 + 20 + 16},
	TLS_RSA_WITH_AES_128_CBC_SHA256:         {id: TLS_RSA_WITH_AES_128_CBC_SHA256, name: "TLS_RSA_WITH_AES_128_CBC_SHA256", macLen: 32, keyLen: 16, ivLen: 16, mac: sha256.New, overhead: 16 + 32 + 16},
	TLS_RSA_WITH_AES_256_CBC_SHA256:         {id: TLS_RSA_WITH_AES_256_CBC_SHA256, name: "TLS_RSA_WITH_AES_256_CBC_SHA256", macLen: 32, keyLen: 32, ivLen: 16, mac: sha256.New, overhead: 16 + 32 + 16},
}

// SuiteName returns the IANA name of a supported suite, or its number.
func SuiteName(id uint16) string {
	if s := suites[id]; s != nil {
		return s.name
	}
	return fmt.Sprintf("0x%04X", id)
}

// prfHash is the TLS 1.2 PRF hash of every supported suite.
func prfHash() hash.Hash { return sha256.New() }

// keyBlockLen is the length of the key block the suite draws from the
// master secret (RFC 5246 §6.3).
func (s *suite) keyBlockLen() int { return 2*s.macLen + 2*s.keyLen + 2*s.ivLen }

// newCipher builds the server side's record protection from a key block
// laid out as in RFC 5246 §6.3.
func (s *suite) newCipher(kb []byte) (recordCipher, error) {
	if len(kb) != s.keyBlockLen() {
		return nil, fmt.Errorf("key block of %d bytes, want %d", len(kb), s.keyBlockLen())
	}
	take := func(n int) []byte { b := kb[:n:n]; kb = kb[n:]; return b }
	cMAC, sMAC := take(s.macLen), take(s.macLen)
	cKey, sKey := take(s.keyLen), take(s.keyLen)
	cIV, sIV := take(s.ivLen), take(s.ivLen)
	if s.gcm {
		c, err := ciphersuite.NewGCM(sKey, sIV, cKey, cIV)
		if err != nil {
			return nil, fmt.Errorf("gcm: %w", err)
		}
		return c, nil
	}
	if s.aead {
		c, err := ciphersuite.NewCCM(ciphersuite.CCMTagLength8, sKey, sIV, cKey, cIV)
		if err != nil {
			return nil, fmt.Errorf("ccm: %w", err)
		}
		return c, nil
	}
	c, err := ciphersuite.NewCBC(sKey, sIV, sMAC, cKey, cIV, cMAC, prf.HashFunc(s.mac))
	if err != nil {
		return nil, fmt.Errorf("cbc: %w", err)
	}
	return c, nil
}

// keyBlock derives the suite's key block from the master secret.
func (s *suite) keyBlock(master, clientRandom, serverRandom []byte) ([]byte, error) {
	seed := make([]byte, 0, 13+64)
	seed = append(seed, "key expansion"...)
	seed = append(seed, serverRandom...)
	seed = append(seed, clientRandom...)
	kb, err := prf.PHash(master, seed, s.keyBlockLen(), prfHash)
	if err != nil {
		return nil, fmt.Errorf("key expansion: %w", err)
	}
	return kb, nil
}

// SuiteNames returns the IANA names of every supported suite: ECDHE, RSA,
// then PSK suites, each in the default preference order.
func SuiteNames() []string {
	var out []string
	for _, ids := range [][]uint16{ECDHESuites, RSASuites, DefaultSuites} {
		for _, id := range ids {
			out = append(out, suites[id].name)
		}
	}
	return out
}

// SuiteByName returns the suite with the given IANA name (case-insensitive).
func SuiteByName(name string) (uint16, bool) {
	for id, s := range suites {
		if strings.EqualFold(s.name, name) {
			return id, true
		}
	}
	return 0, false
}
