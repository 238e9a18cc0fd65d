package dtlsx

import (
	"bytes"
	"encoding/binary"
	"encoding/gob"
	"errors"
	"fmt"

	"github.com/pion/dtls/v3"
)

// masterSecretLen is the TLS 1.2 master secret length (RFC 5246 §8.1).
const masterSecretLen = 48

// serializedState mirrors pion/dtls v3.1.15's unexported serializedState
// field for field: dtls.State.MarshalBinary gob-encodes that struct, and
// gob matches fields by name, so this type decodes pion's snapshot and
// encodes one that dtls.State.UnmarshalBinary accepts. TestSnapshotMirror
// checks that re-encoding reproduces pion's bytes exactly, so a pion
// upgrade that adds a field fails the test instead of losing the field.
type serializedState struct {
	RemoteSequenceNumber  uint64
	HandshakeComplete     bool
	LocalEpoch            uint16
	RemoteEpoch           uint16
	LocalRandom           [32]byte
	RemoteRandom          [32]byte
	CipherSuiteID         uint16
	MasterSecret          []byte
	SequenceNumber        uint64
	SRTPProtectionProfile uint16
	PeerCertificates      [][]byte
	IdentityHint          []byte
	SessionID             []byte
	LocalConnectionID     []byte
	RemoteConnectionID    []byte
	IsClient              bool
	NegotiatedProtocol    string
}

// snapshot is a hibernated session's DTLS state, kept compact (about 200
// bytes for a PSK session): the keys are derived again from the master
// secret and the randoms on resume. It holds the master secret: never log
// it; wipe clears it when the session ends or resumes.
type snapshot struct {
	master       [masterSecretLen]byte
	localRandom  [32]byte
	remoteRandom [32]byte
	// localSeq is the next sequence number the server sends under
	// localEpoch; remoteSeq is one above the highest the peer sent under
	// remoteEpoch (pion's replay cutoff after resume).
	localSeq, remoteSeq     uint64
	localEpoch, remoteEpoch uint16
	suite                   uint16
	localCID, remoteCID     []byte
	rare                    *rareState // nil for PSK sessions without extras
}

// rareState holds the snapshot fields a PSK session does not use.
type rareState struct {
	peerCerts [][]byte
	sessionID []byte
	alpn      string
	srtp      uint16
}

// errSnapshot wraps every reason a state cannot be snapshotted.
var errSnapshot = errors.New("dtlsx: cannot snapshot DTLS state")

// takeSnapshot exports c's established state. The caller guarantees that c
// sends no record afterwards (the session's link is sealed). The PSK
// identity hint is not kept: the Session holds the parsed identity.
func takeSnapshot(c *dtls.Conn) (*snapshot, error) {
	st, ok := c.ConnectionState()
	if !ok {
		return nil, fmt.Errorf("%w: no connection state", errSnapshot)
	}
	b, err := st.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errSnapshot, err)
	}
	var ss serializedState
	if err := gob.NewDecoder(bytes.NewReader(b)).Decode(&ss); err != nil {
		return nil, fmt.Errorf("%w: decode: %w", errSnapshot, err)
	}
	defer clear(ss.MasterSecret)
	return compact(&ss)
}

func compact(ss *serializedState) (*snapshot, error) {
	if !ss.HandshakeComplete || ss.IsClient || len(ss.MasterSecret) != masterSecretLen {
		return nil, fmt.Errorf("%w: not an established server state", errSnapshot)
	}
	sn := &snapshot{
		localRandom: ss.LocalRandom, remoteRandom: ss.RemoteRandom,
		localSeq: ss.SequenceNumber, remoteSeq: ss.RemoteSequenceNumber,
		localEpoch: ss.LocalEpoch, remoteEpoch: ss.RemoteEpoch,
		suite:    ss.CipherSuiteID,
		localCID: cloneOrNil(ss.LocalConnectionID), remoteCID: cloneOrNil(ss.RemoteConnectionID),
	}
	copy(sn.master[:], ss.MasterSecret)
	if len(ss.PeerCertificates) > 0 || len(ss.SessionID) > 0 || ss.NegotiatedProtocol != "" || ss.SRTPProtectionProfile != 0 {
		sn.rare = &rareState{peerCerts: ss.PeerCertificates, sessionID: ss.SessionID, alpn: ss.NegotiatedProtocol, srtp: ss.SRTPProtectionProfile}
	}
	return sn, nil
}

func cloneOrNil(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return bytes.Clone(b)
}

// state rebuilds the dtls.State to resume from.
func (sn *snapshot) state() (*dtls.State, error) {
	ss := sn.serialized()
	defer clear(ss.MasterSecret)
	var buf bytes.Buffer
	if err := gob.NewEncoder(&buf).Encode(ss); err != nil {
		return nil, fmt.Errorf("dtlsx: encode snapshot: %w", err)
	}
	defer clear(buf.Bytes())
	st := &dtls.State{}
	if err := st.UnmarshalBinary(buf.Bytes()); err != nil {
		return nil, fmt.Errorf("dtlsx: restore snapshot: %w", err)
	}
	return st, nil
}

func (sn *snapshot) serialized() *serializedState {
	ss := &serializedState{
		RemoteSequenceNumber: sn.remoteSeq, HandshakeComplete: true,
		LocalEpoch: sn.localEpoch, RemoteEpoch: sn.remoteEpoch,
		LocalRandom: sn.localRandom, RemoteRandom: sn.remoteRandom,
		CipherSuiteID: sn.suite, MasterSecret: bytes.Clone(sn.master[:]),
		SequenceNumber:    sn.localSeq,
		LocalConnectionID: sn.localCID, RemoteConnectionID: sn.remoteCID,
	}
	if r := sn.rare; r != nil {
		ss.PeerCertificates, ss.SessionID, ss.NegotiatedProtocol, ss.SRTPProtectionProfile = r.peerCerts, r.sessionID, r.alpn, r.srtp
	}
	return ss
}

// wipe clears the master secret.
func (sn *snapshot) wipe() { clear(sn.master[:]) }

// Record content types a hibernated session may be woken by.
const (
	contentApplicationData = 23
)

// acceptAsleep reports whether b's first record may wake a hibernated
// session: a protected record of the session's epoch whose sequence number
// is above every one the peer sent before hibernating. A replayed record
// is refused here, before any state is rebuilt (pion refuses it again
// after resume: the snapshot's remote sequence number is its cutoff).
func acceptAsleep(b []byte, epoch uint16, cutoff uint64) bool {
	if len(b) < recordHeaderLen {
		return false
	}
	switch b[0] {
	case contentApplicationData, contentAlert, contentHandshake, contentCID:
	default:
		return false
	}
	if binary.BigEndian.Uint16(b[3:5]) != epoch {
		return false
	}
	seq := uint64(binary.BigEndian.Uint16(b[5:7]))<<32 | uint64(binary.BigEndian.Uint32(b[7:11]))
	return seq >= cutoff
}
