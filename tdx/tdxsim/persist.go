package tdxsim

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/cml-project/cml/tdx/collateral"
)

// Files of a simulator directory (see Init).
const (
	ConfigFile    = "tdxsim.json"
	RootFile      = "root.pem"
	ChainFile     = "pck-chain.pem"
	KeysDir       = "keys"
	CollateralDir = "collateral"

	configFormat = "tdxsim/v1"
	warning      = "DEVELOPMENT ONLY: a simulated Intel TDX platform whose root key is in keys/. Trust root.pem only in test and demo setups."
	maxFileSize  = 1 << 20
)

var keyNames = []string{"root", "platform-ca", "pck", "tcb-signing", "attestation"}

// fileConfig is tdxsim.json.
type fileConfig struct {
	Format    string       `json:"format"`
	Warning   string       `json:"warning"`
	CreatedAt time.Time    `json:"created_at"`
	TCBStatus string       `json:"tcb_status"`
	QEID      string       `json:"qe_id"`
	Platform  platformJSON `json:"platform"`
	TD        TDJSON       `json:"td"`
}

type platformJSON struct {
	FMSPC     string `json:"fmspc"`
	PCEID     string `json:"pce_id"`
	PCESVN    uint16 `json:"pce_svn"`
	CPUSVN    string `json:"cpu_svn"`
	TEETCBSVN string `json:"tee_tcb_svn"`
	MRSEAM    string `json:"mr_seam"`
	QESVN     uint16 `json:"qe_svn"`
}

// TDJSON is the JSON form of TDParams (hex strings), as stored in
// tdxsim.json under "td": the default TD a loader simulates.
type TDJSON struct {
	MRTD          string    `json:"mrtd"`
	RTMR          [4]string `json:"rtmr"`
	MRConfigID    string    `json:"mr_config_id"`
	MROwner       string    `json:"mr_owner"`
	MROwnerConfig string    `json:"mr_owner_config"`
	Debug         bool      `json:"debug"`
	Attributes    string    `json:"attributes"` // TDATTRIBUTES as 16 hex digits (uint64)
	XFAM          string    `json:"xfam"`       // 16 hex digits (uint64)
	TEETCBSVN     string    `json:"tee_tcb_svn,omitempty"`
	MRSEAM        string    `json:"mr_seam,omitempty"`
}

// JSON returns the hex form of td.
func (td TDParams) JSON() TDJSON {
	j := TDJSON{
		MRTD:          hex.EncodeToString(td.MRTD[:]),
		MRConfigID:    hex.EncodeToString(td.MRConfigID[:]),
		MROwner:       hex.EncodeToString(td.MROwner[:]),
		MROwnerConfig: hex.EncodeToString(td.MROwnerConfig[:]),
		Debug:         td.Debug,
		Attributes:    fmt.Sprintf("%016x", td.Attributes),
		XFAM:          fmt.Sprintf("%016x", td.XFAM),
	}
	for i := range td.RTMR {
		j.RTMR[i] = hex.EncodeToString(td.RTMR[i][:])
	}
	if td.TEETCBSVN != ([16]byte{}) {
		j.TEETCBSVN = hex.EncodeToString(td.TEETCBSVN[:])
	}
	if td.MRSEAM != ([48]byte{}) {
		j.MRSEAM = hex.EncodeToString(td.MRSEAM[:])
	}
	return j
}

// Params parses j; every field must have its exact size (empty means zero).
func (j TDJSON) Params() (TDParams, error) {
	var td TDParams
	fields := []struct {
		name string
		s    string
		dst  []byte
	}{
		{"mrtd", j.MRTD, td.MRTD[:]},
		{"rtmr[0]", j.RTMR[0], td.RTMR[0][:]},
		{"rtmr[1]", j.RTMR[1], td.RTMR[1][:]},
		{"rtmr[2]", j.RTMR[2], td.RTMR[2][:]},
		{"rtmr[3]", j.RTMR[3], td.RTMR[3][:]},
		{"mr_config_id", j.MRConfigID, td.MRConfigID[:]},
		{"mr_owner", j.MROwner, td.MROwner[:]},
		{"mr_owner_config", j.MROwnerConfig, td.MROwnerConfig[:]},
		{"tee_tcb_svn", j.TEETCBSVN, td.TEETCBSVN[:]},
		{"mr_seam", j.MRSEAM, td.MRSEAM[:]},
	}
	for _, f := range fields {
		if err := decodeHex(f.name, f.s, f.dst); err != nil {
			return TDParams{}, err
		}
	}
	var err error
	if td.Attributes, err = parseU64("attributes", j.Attributes); err != nil {
		return TDParams{}, err
	}
	if td.XFAM, err = parseU64("xfam", j.XFAM); err != nil {
		return TDParams{}, err
	}
	td.Debug = j.Debug
	return td, nil
}

func decodeHex(name, s string, dst []byte) error {
	if s == "" {
		return nil
	}
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(dst) {
		return fmt.Errorf("tdxsim: %s must be %d hex-encoded bytes", name, len(dst))
	}
	copy(dst, b)
	return nil
}

func parseU64(name, s string) (uint64, error) {
	if s == "" {
		return 0, nil
	}
	v, err := strconv.ParseUint(s, 16, 64)
	if err != nil {
		return 0, fmt.Errorf("tdxsim: %s must be up to 16 hex digits", name)
	}
	return v, nil
}

// Init creates a simulated platform and persists it in dir, which must not
// exist or be empty:
//
//	dir/tdxsim.json         platform, default TD measurements, TCB status
//	dir/root.pem            the simulator's root CA: trust it only explicitly
//	dir/pck-chain.pem       PCK certificate, PCK Platform CA, root
//	dir/keys/*.key          PKCS#8 private keys, mode 0600 (dir 0700)
//	dir/collateral/         TCB info, QE identity and CRLs in the collateral
//	                        directory layout (see package collateral)
//
// It backs `kbsctl dev tdxsim init DIR`.
func Init(dir string, opts Options) (*Simulator, error) {
	if des, err := os.ReadDir(dir); err == nil && len(des) > 0 {
		return nil, fmt.Errorf("tdxsim: %s is not empty", dir)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("tdxsim: %w", err)
	}
	s, err := New(opts)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, KeysDir), 0o700); err != nil {
		return nil, fmt.Errorf("tdxsim: %w", err)
	}
	keys := map[string]*ecdsa.PrivateKey{
		"root": s.pki.rootKey, "platform-ca": s.pki.caKey, "pck": s.pki.pckKey,
		"tcb-signing": s.pki.tcbKey, "attestation": s.attKey,
	}
	for _, name := range keyNames {
		der, err := x509.MarshalPKCS8PrivateKey(keys[name])
		if err != nil {
			return nil, fmt.Errorf("tdxsim: %w", err)
		}
		if err := writeNew(filepath.Join(dir, KeysDir, name+".key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			return nil, err
		}
	}
	p := s.platform
	cfg := fileConfig{
		Format:    configFormat,
		Warning:   warning,
		CreatedAt: opts.Now.UTC(),
		TCBStatus: s.status,
		QEID:      hex.EncodeToString(s.qeID),
		Platform: platformJSON{
			FMSPC:     hex.EncodeToString(p.FMSPC[:]),
			PCEID:     hex.EncodeToString(p.PCEID[:]),
			PCESVN:    p.PCESVN,
			CPUSVN:    hex.EncodeToString(p.CPUSVN[:]),
			TEETCBSVN: hex.EncodeToString(p.TEETCBSVN[:]),
			MRSEAM:    hex.EncodeToString(p.MRSEAM[:]),
			QESVN:     p.QESVN,
		},
		TD: s.td.JSON(),
	}
	cj, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("tdxsim: %w", err)
	}
	for name, data := range map[string][]byte{
		ConfigFile: append(cj, '\n'),
		RootFile:   s.RootPEM(),
		ChainFile:  s.chainPEM,
	} {
		if err := writeNew(filepath.Join(dir, name), data, 0o644); err != nil {
			return nil, err
		}
	}
	if err := s.WriteCollateral(filepath.Join(dir, CollateralDir)); err != nil {
		return nil, err
	}
	return s, nil
}

func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("tdxsim: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("tdxsim: write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("tdxsim: write %s: %w", path, err)
	}
	return nil
}

func readSmall(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("tdxsim: %w", err)
	}
	if fi.Size() > maxFileSize {
		return nil, fmt.Errorf("tdxsim: %s is larger than %d bytes", path, maxFileSize)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tdxsim: %w", err)
	}
	return b, nil
}

func readKey(path string) (*ecdsa.PrivateKey, error) {
	b, err := readSmall(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("tdxsim: %s: not a PEM PRIVATE KEY", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("tdxsim: %s: %w", path, err)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("tdxsim: %s: not an ECDSA key", path)
	}
	return ek, nil
}

// parseConfig parses tdxsim.json.
func parseConfig(b []byte) (*fileConfig, Platform, TDParams, error) {
	var cfg fileConfig
	var p Platform
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		return nil, p, TDParams{}, fmt.Errorf("tdxsim: %s: %w", ConfigFile, err)
	}
	if cfg.Format != configFormat {
		return nil, p, TDParams{}, fmt.Errorf("tdxsim: %s: format %q, want %q", ConfigFile, cfg.Format, configFormat)
	}
	if !validStatus(cfg.TCBStatus) {
		return nil, p, TDParams{}, fmt.Errorf("tdxsim: %s: unknown tcb_status %q", ConfigFile, cfg.TCBStatus)
	}
	var qeID [16]byte
	for _, f := range []struct {
		name string
		s    string
		dst  []byte
	}{
		{"platform.fmspc", cfg.Platform.FMSPC, p.FMSPC[:]},
		{"platform.pce_id", cfg.Platform.PCEID, p.PCEID[:]},
		{"platform.cpu_svn", cfg.Platform.CPUSVN, p.CPUSVN[:]},
		{"platform.tee_tcb_svn", cfg.Platform.TEETCBSVN, p.TEETCBSVN[:]},
		{"platform.mr_seam", cfg.Platform.MRSEAM, p.MRSEAM[:]},
		{"qe_id", cfg.QEID, qeID[:]},
	} {
		if err := decodeHex(f.name, f.s, f.dst); err != nil {
			return nil, p, TDParams{}, err
		}
	}
	p.PCESVN, p.QESVN = cfg.Platform.PCESVN, cfg.Platform.QESVN
	td, err := cfg.TD.Params()
	if err != nil {
		return nil, p, TDParams{}, err
	}
	return &cfg, p, td, nil
}

// Load opens a simulator directory created by Init. The loaded simulator
// produces quotes with the persisted keys and certificates, and serves the
// collateral in dir/collateral.
func Load(dir string) (*Simulator, error) {
	b, err := readSmall(filepath.Join(dir, ConfigFile))
	if err != nil {
		return nil, err
	}
	cfg, p, td, err := parseConfig(b)
	if err != nil {
		return nil, err
	}
	chain, err := readSmall(filepath.Join(dir, ChainFile))
	if err != nil {
		return nil, err
	}
	var certs []*x509.Certificate
	for rest := chain; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("tdxsim: %s: %w", ChainFile, err)
		}
		certs = append(certs, c)
	}
	if len(certs) != 3 {
		return nil, fmt.Errorf("tdxsim: %s: %d certificates, want 3 (PCK, platform CA, root)", ChainFile, len(certs))
	}
	x := &pki{pck: certs[0], ca: certs[1], root: certs[2]}
	if x.pckKey, err = readKey(filepath.Join(dir, KeysDir, "pck.key")); err != nil {
		return nil, err
	}
	if !x.pckKey.PublicKey.Equal(x.pck.PublicKey) {
		return nil, fmt.Errorf("tdxsim: %s does not match the PCK certificate in %s", filepath.Join(KeysDir, "pck.key"), ChainFile)
	}
	att, err := readKey(filepath.Join(dir, KeysDir, "attestation.key"))
	if err != nil {
		return nil, err
	}
	entries, err := collateral.ReadDir(filepath.Join(dir, CollateralDir))
	if err != nil {
		return nil, err
	}
	qeID, _ := hex.DecodeString(cfg.QEID)
	return &Simulator{
		platform:   p,
		status:     cfg.TCBStatus,
		pki:        x,
		attKey:     att,
		chainPEM:   chain,
		qeID:       qeID,
		collateral: entries,
		td:         td,
	}, nil
}
