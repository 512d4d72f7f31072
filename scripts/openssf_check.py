"""Signs and verifies model folders with the reference OpenSSF Model Signing library (PyPI
`model-signing`, key-based: ECDSA P-256 keys, no Sigstore services), for provenance_test.sh.

The `model_signing` CLI signs and verifies SHA-256 bundles only; BLAKE3 (what Commons signs
with) needs the Python API, which this wraps. Run it with the virtualenv's Python:

    python openssf_check.py verify MODEL_DIR SIG PUBLIC_KEY [--require-hint]
        the reference verifier, with the hashing algorithm and ignored paths taken from the
        bundle itself (as `verifying.Config` does when given no hashing config);
        --require-hint: also require the key hint the reference signer writes
    python openssf_check.py verify-blake3 MODEL_DIR SIG PUBLIC_KEY [--require-hint]
    python openssf_check.py verify-sha256 MODEL_DIR SIG PUBLIC_KEY [--require-hint]
        the same, and the bundle must hash its files with that algorithm
    python openssf_check.py sign-blake3 MODEL_DIR PRIVATE_KEY SIG
    python openssf_check.py sign-sha256 MODEL_DIR PRIVATE_KEY SIG
        the reference signer (git paths and SIG, when inside MODEL_DIR, are not signed)
    python openssf_check.py hash-type SIG
        prints the bundle's file hashing algorithm (`sha256`, `blake3`)
    python openssf_check.py tamper-signature SIG
        changes one byte of the DER signature in SIG in place, keeping the JSON and the
        base64 valid (so only the signature check can catch it)

Exit status: 0 success; 1 the reference library refused (its message on stderr); 2 a usage
or setup error (a missing file, the library not installed); 3 the bundle verified but is not
what was asked (another hashing algorithm, no key hint).
"""

import argparse
import base64
import json
import sys
from pathlib import Path
from typing import NoReturn

REFUSED, SETUP, NOT_AS_ASKED = 1, 2, 3


def die(status: int, message: str) -> NoReturn:
    print(message, file=sys.stderr)
    sys.exit(status)


def library():
    try:
        import model_signing
    except ImportError as e:
        die(SETUP, f"model_signing is not installed in {sys.prefix}: {e}")
    return model_signing


def describe(e: BaseException) -> str:
    # cryptography's InvalidSignature has an empty message: name the exception as well.
    text = str(e).strip()
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def need(path: str, what: str, folder: bool = False) -> Path:
    p = Path(path)
    if not (p.is_dir() if folder else p.is_file()):
        die(SETUP, f"no {what} at {p}")
    return p


def read_bundle(sig: Path) -> dict:
    """The bundle and its decoded in-toto statement (as `statement`)."""
    try:
        bundle = json.loads(sig.read_text(encoding="utf-8"))
        payload = base64.b64decode(bundle["dsseEnvelope"]["payload"])
        bundle["statement"] = json.loads(payload)
        return bundle
    except (ValueError, KeyError, TypeError) as e:
        die(NOT_AS_ASKED, f"{sig} is not a readable model signing bundle: {describe(e)}")


def hash_type(bundle: dict) -> str:
    predicate = bundle["statement"].get("predicate", {})
    kinds = {predicate.get("serialization", {}).get("hash_type")}
    kinds |= {r.get("algorithm") for r in predicate.get("resources", [])}
    if len(kinds) != 1:
        die(NOT_AS_ASKED, f"the bundle mixes hashing algorithms: {sorted(map(str, kinds))}")
    return kinds.pop()


def verify(args: argparse.Namespace, algorithm: "str | None") -> None:
    model = need(args.model, "model folder", folder=True)
    sig = need(args.sig, "signature bundle")
    public_key = need(args.public_key, "public key")
    ms = library()
    # No hashing config: the verifier takes the algorithm and ignored paths from the bundle.
    try:
        ms.verifying.Config().use_elliptic_key_verifier(public_key=public_key).verify(model, sig)
    except Exception as e:  # the library raises ValueError, InvalidSignature, pydantic errors
        die(REFUSED, f"model_signing {ms.__version__} refused {sig}: {describe(e)}")
    bundle = read_bundle(sig)
    found = hash_type(bundle)
    if algorithm is not None and found != algorithm:
        die(NOT_AS_ASKED, f"{sig} verified, but hashes files with {found}, not {algorithm}")
    hint = (bundle.get("verificationMaterial", {}).get("publicKey") or {}).get("hint")
    if args.require_hint and not hint:
        die(NOT_AS_ASKED, f"{sig} verified, but has no key hint (verificationMaterial.publicKey.hint)")
    files = len(bundle["statement"]["predicate"]["resources"])
    print(f"model_signing {ms.__version__}: {model} verified ({found}, {files} files)")


def sign(args: argparse.Namespace, algorithm: str) -> None:
    model = need(args.model, "model folder", folder=True)
    key = need(args.private_key, "private key")
    sig = Path(args.sig)
    ms = library()
    # As the CLI does (the API does not): leave the signature file itself out when it is
    # inside the model, and say so in the bundle's ignore_paths.
    ignored = []
    try:
        ignored.append(sig.resolve().relative_to(model.resolve()).as_posix())
    except ValueError:
        pass
    hashing = (
        ms.hashing.Config()
        .use_file_serialization(hashing_algorithm=algorithm)
        .set_ignored_paths(paths=ignored, ignore_git_paths=True)
    )
    try:
        (
            ms.signing.Config()
            .use_elliptic_key_signer(private_key=key)
            .set_hashing_config(hashing)
            .sign(model, sig)
        )
    except Exception as e:
        die(REFUSED, f"model_signing {ms.__version__} could not sign {model}: {describe(e)}")
    print(f"model_signing {ms.__version__}: signed {model} ({algorithm}) into {sig}")


def tamper_signature(args: argparse.Namespace) -> None:
    path = need(args.sig, "signature bundle")
    text = path.read_text(encoding="utf-8")
    old = json.loads(text)["dsseEnvelope"]["signatures"][0]["sig"]
    der = bytearray(base64.b64decode(old, validate=True))
    # The last byte is the low byte of s: changing it keeps the DER well formed.
    der[-1] ^= 0x01
    new = base64.b64encode(bytes(der)).decode()
    if text.count(f'"{old}"') != 1:
        die(SETUP, f"the signature text is not unique in {path}")
    tampered = text.replace(f'"{old}"', f'"{new}"')
    assert json.loads(tampered)["dsseEnvelope"]["signatures"][0]["sig"] == new
    path.write_text(tampered, encoding="utf-8")
    print(f"changed the last signature byte in {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("verify", "verify-blake3", "verify-sha256"):
        p = commands.add_parser(name)
        p.add_argument("model")
        p.add_argument("sig")
        p.add_argument("public_key")
        p.add_argument("--require-hint", action="store_true")
    for name in ("sign-blake3", "sign-sha256"):
        p = commands.add_parser(name)
        p.add_argument("model")
        p.add_argument("private_key")
        p.add_argument("sig")
    commands.add_parser("hash-type").add_argument("sig")
    commands.add_parser("tamper-signature").add_argument("sig")
    args = parser.parse_args()

    if args.command == "verify":
        verify(args, None)
    elif args.command.startswith("verify-"):
        verify(args, args.command.removeprefix("verify-"))
    elif args.command.startswith("sign-"):
        sign(args, args.command.removeprefix("sign-"))
    elif args.command == "hash-type":
        print(hash_type(read_bundle(need(args.sig, "signature bundle"))))
    elif args.command == "tamper-signature":
        tamper_signature(args)


if __name__ == "__main__":
    main()
