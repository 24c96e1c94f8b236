# Independent EMDL v1 decryptor, written from SPEC.md alone, checked against
# the known-answer vector: python3 verify_kat.py model  (needs python3-cryptography).
import hashlib, hmac, struct, os, sys
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

def hkdf(ikm, salt, info): return HKDF(hashes.SHA256(), 32, salt, info).derive(ikm)
def expand(prk, info): return HKDFExpand(hashes.SHA256(), 32, info).derive(prk)
dek = bytes(range(32))
d = sys.argv[1]
m = open(os.path.join(d, "MANIFEST.emdl"), "rb").read()
assert m[:4] == b"EMDL" and m[4] == 1 and m[5] == ord('M')
suite, C, nfiles, total = struct.unpack(">HIIQ", m[6:24]); flags = m[24]
model_id, salt = m[25:41], m[41:73]
kver, n = struct.unpack(">IB", m[73:78]); kid = m[78:78+n]
B, = struct.unpack(">I", m[78+n:82+n]); kc = m[82+n:114+n]; mac = m[114+n:146+n]
H = 146 + n
assert len(m) == H + B
assert hmac.compare_digest(hkdf(dek, salt, b"cml/v1/emdl/key-check"), kc)
K = hkdf(dek, salt, b"cml/v1/emdl/manifest" + struct.pack(">H", suite))
assert hmac.new(expand(K, b"cml/v1/emdl/header-mac"), m[:H-32], hashlib.sha256).digest() == mac
body = AESGCM(expand(K, b"cml/v1/emdl/payload")).decrypt(b"\0"*11 + b"\1", m[H:], hashlib.sha256(m[:H]).digest())
off = 0
for _ in range(nfiles):
    p, = struct.unpack(">H", body[off:off+2]); path = body[off+2:off+2+p]; off += 2+p
    size, mode = struct.unpack(">QI", body[off:off+12]); sha = body[off+12:off+44]; hd = body[off+44:off+76]; off += 76
    f = open(os.path.join(d, path.decode()), "rb").read()
    fh = 137 + n; hdr = f[:fh]
    assert hashlib.sha256(hdr).digest() == hd
    assert hdr[:6] == b"EMDL\x01F"
    s2, C2, L = struct.unpack(">HIQ", hdr[6:20]); fsalt = hdr[36:68]
    assert (s2, C2, L) == (suite, C, size) and hdr[20:36] == model_id
    assert hmac.compare_digest(hkdf(dek, fsalt, b"cml/v1/emdl/key-check"), hdr[73+n:105+n])
    Kf = hkdf(dek, fsalt, b"cml/v1/emdl" + struct.pack(">H", suite) + path)
    assert hmac.new(expand(Kf, b"cml/v1/emdl/header-mac"), hdr[:-32], hashlib.sha256).digest() == hdr[-32:]
    N = max(1, -(-L // C)); g = AESGCM(expand(Kf, b"cml/v1/emdl/payload")); pos = fh; pt = b""
    for i in range(N):
        li = min(C, L - i*C)
        pt += g.decrypt(i.to_bytes(11, "big") + bytes([1 if i == N-1 else 0]), f[pos:pos+li+16], hd); pos += li+16
    assert pos == len(f) == 137 + n + L + 16*N
    assert hashlib.sha256(pt).digest() == sha
    print(path.decode(), oct(mode), L, N, "chunks", pt[:32])
assert off == len(body)
print("OK: model id", model_id.hex(), "key", kid.decode(), kver)
