"""Root pinning bootstrap (`trustpull pin`): from a verified repository to a pin in the config.

docker/cli#2752 and notary#1611 ask how to get the root key ID that `trust_pinning` wants. The
answer here is always taken from trust data that verified:

1. verify the repository as a pull would (`verify_repository`, trust on first use when nothing
   is cached or pinned);
2. describe its root certificates (subject, validity, key type) and their canonical key IDs;
3. build the pin: a `[trust_pinning.certs]` entry, a `[trust_pinning.ca]` entry (only if the CA
   really anchors the verified root), or a `[[rules]]` entry with `root_keys`;
4. check that the pin alone accepts the verified root (pure, no I/O but the CA file), edit the
   configuration text, re-parse it with the strict loader, verify again with it in force, and
   check that the new pin is the one that applied (not a more specific one).

Config files are edited as text, never re-serialised: the user's file stays byte for byte as it
was plus the inserted lines, and the edit is accepted only if `tomllib` reads exactly the old
document plus the new entry. A table written in a form this cannot edit safely (an inline table,
dotted keys, an entry for the same name with other values) is refused with the text to add.

Longer than 500 lines because writing a pin safely is most of it: the TOML text edit, the
forms it refuses to edit, and the checks that the edited file still loads and verifies.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import os
import re
import tempfile
import tomllib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from trust.config import Configuration, load_config
from trust.errors import ConfigError, InputError, TrustPinError, TrustpullError
from trust.lookup import Resolution
from trust.notary.trusted_set import TrustData, TrustedSet
from trust.notary.x509root import PIN_NO_TOFU
from trust.reference import Reference
from trust.route import repository_rule
from trust.service import TrustService, mirror_origin, select_source, settings_for
from trust.settings import Settings, TrustPinning

__all__ = [
    "Pin",
    "PinResult",
    "RootCertificate",
    "Verified",
    "pin_repository",
    "root_certificates",
    "verify_repository",
]

PinKind = Literal["certs", "ca", "rule"]


# ------------------------------------------------------------------------------ verification


@dataclass(frozen=True)
class Verified:
    """A verified repository: its resolutions and the verified Notary data (root included)."""

    resolutions: tuple[Resolution, ...]
    data: TrustData
    first_use: bool


def _effective(ref: Reference, loaded: Configuration) -> Settings:
    """The settings the repository is verified with: a policy rule's pins replace the file's."""
    if loaded.policy is None:
        return loaded.settings
    return settings_for(repository_rule(loaded.policy, ref), ref, loaded.settings)


def verify_repository(
    ref: Reference, loaded: Configuration, *, notice: Callable[[str], None] | None = None
) -> Verified:
    """THE verification call of `pin` (one function, so it can be re-pointed in one place).

    Verifies `ref` as `trustpull resolve` does (policy included; every signed tag when no tag
    is given), then reads the verified data back from the trust cache that this verification
    just updated, verified again offline under the same pins, for its root.
    """
    from trust.notary.client import NotaryClient

    first_use = False

    def seen(text: str) -> None:
        nonlocal first_use
        first_use = first_use or text.startswith("trust on first use")
        if notice is not None:
            notice(text)

    all_tags = ref.digest is None and not ref.tag_given
    service = TrustService(loaded.settings, loaded.policy, notice=seen)
    resolutions = service.verify(ref, all_tags=all_tags).resolutions
    offline = dataclasses.replace(_effective(ref, loaded), offline=True)
    data = NotaryClient(offline, warn=lambda _text: None).update(ref)
    return Verified(tuple(resolutions), data, first_use)


# ------------------------------------------------------------------------------ the root


@dataclass(frozen=True)
class RootCertificate:
    """One root key's leaf certificate, as `pin` shows it."""

    key_id: str  # as listed in root.json
    canonical_id: str  # what users pin (`docker trust inspect` shows it)
    subject: str
    issuer: str
    not_before: dt.datetime
    not_after: dt.datetime
    key_type: str
    keytype: str  # notary's name: ecdsa-x509, rsa-x509

    @property
    def self_signed(self) -> bool:
        return self.subject == self.issuer

    def to_json(self) -> dict[str, object]:
        return {
            "key_id": self.key_id,
            "canonical_id": self.canonical_id,
            "subject": self.subject,
            "issuer": self.issuer,
            "not_before": _when(self.not_before),
            "not_after": _when(self.not_after),
            "key_type": self.key_type,
            "keytype": self.keytype,
        }


def _when(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}


def _describe_key(cert: x509.Certificate) -> str:
    key = cert.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"ECDSA {_CURVES.get(key.curve.name, key.curve.name)}"
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}"
    return type(key).__name__


def root_certificates(data: TrustData) -> list[RootCertificate]:
    """The root role's certificates that passed validation, in root.json order."""
    valid = {key.canonical_id for key in data.root_check.leaf_keys.values()}
    found: list[RootCertificate] = []
    for key_id in data.root.roles["root"].keyids:
        key = data.root.keys.get(key_id)
        if key is None or key.canonical_id not in valid:
            continue
        cert = key.certificates()[0]
        found.append(
            RootCertificate(
                key_id=key_id,
                canonical_id=key.canonical_id,
                subject=cert.subject.rfc4514_string(),
                issuer=cert.issuer.rfc4514_string(),
                not_before=cert.not_valid_before_utc,
                not_after=cert.not_valid_after_utc,
                key_type=_describe_key(cert),
                keytype=key.keytype,
            )
        )
    return found


# ------------------------------------------------------------------------------ the pin


def toml_string(text: str) -> str:
    """A TOML basic string (quotes, backslashes and control characters escaped)."""
    out = []
    for char in text:
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _toml_list(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(toml_string(v) for v in values) + "]"


@dataclass(frozen=True)
class Pin:
    """One pin for one repository, in one of the three forms the configuration knows."""

    kind: PinKind
    gun: str
    key_ids: tuple[str, ...] = ()
    ca_file: Path | None = None
    prefix: str | None = None
    rule_name: str | None = None
    registry: str | None = None
    repository: str | None = None

    @property
    def table(self) -> str:
        return {"certs": "trust_pinning.certs", "ca": "trust_pinning.ca", "rule": "rules"}[
            self.kind
        ]

    @property
    def key(self) -> str:
        if self.kind == "certs":
            return self.gun
        if self.kind == "ca":
            assert self.prefix is not None
            return self.prefix
        assert self.rule_name is not None
        return self.rule_name

    def entry(self) -> dict[str, Any]:
        """The entry as tomllib reads it (a table value, or one `[[rules]]` table)."""
        if self.kind == "certs":
            return {self.gun: list(self.key_ids)}
        if self.kind == "ca":
            return {self.key: str(self.ca_file)}
        return {
            "name": self.rule_name,
            "registry": self.registry,
            "repository": self.repository,
            "root_keys": list(self.key_ids),
        }

    def lines(self) -> list[str]:
        """The entry's lines (without a table header)."""
        if self.kind == "certs":
            return [f"{toml_string(self.gun)} = {_toml_list(self.key_ids)}"]
        if self.kind == "ca":
            return [f"{toml_string(self.key)} = {toml_string(str(self.ca_file))}"]
        return [f"{key} = {_toml_value(value)}" for key, value in self.entry().items()]

    def toml(self) -> str:
        """The entry with its header, as one would add it to an empty file."""
        header = "[[rules]]" if self.kind == "rule" else f"[{self.table}]"
        return "\n".join([header, *self.lines()]) + "\n"

    def to_json(self) -> dict[str, object]:
        return {"kind": self.kind, "table": self.table, "key": self.key, "toml": self.toml()}


def _toml_value(value: object) -> str:
    if isinstance(value, list):
        return _toml_list(tuple(value))
    return toml_string(str(value))


# ------------------------------------------------------------------------------ editing


class EditRefused(InputError):
    """The configuration file is in a form that `pin` does not edit safely."""

    kind = "Config"


def _header_re(table: str) -> re.Pattern[str]:
    parts = r"[ \t]*\.[ \t]*".join(re.escape(p) for p in table.split("."))
    return re.compile(rf"^[ \t]*\[[ \t]*{parts}[ \t]*\][ \t]*(?:#[^\n]*)?$", re.MULTILINE)


def _append(text: str, block: list[str], newline: str) -> str:
    if text and not text.endswith(("\n", "\r")):
        text += newline
    if text.strip():
        text += newline
    return text + newline.join(block) + newline


def _refuse(path: Path, why: str, pin: Pin) -> EditRefused:
    return EditRefused(f"{path}: {why}", hint=f"add this yourself:\n{pin.toml().rstrip()}")


def add_pin(text: str, pin: Pin, path: Path) -> str | None:
    """`text` with `pin` added, or None when the same entry is already there.

    The result is accepted only if tomllib reads it as the old document plus the entry.
    """
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    newline = "\r\n" if "\r\n" in text else "\n"
    expected = copy.deepcopy(doc)
    if pin.kind == "rule":
        rules = doc.get("rules", [])
        if not isinstance(rules, list):
            raise _refuse(path, "rules is not an array of tables", pin)
        for rule in rules:
            if isinstance(rule, dict) and rule.get("name") == pin.rule_name:
                if rule == pin.entry():
                    return None
                raise _refuse(path, f"a rule named {pin.rule_name!r} exists already", pin)
        expected.setdefault("rules", []).append(pin.entry())
        edited = _append(text, ["[[rules]]", *pin.lines()], newline)
    else:
        section, name = pin.table.split(".")
        parent = doc.get(section, {})
        table = parent.get(name) if isinstance(parent, dict) else None
        if not isinstance(parent, dict) or (table is not None and not isinstance(table, dict)):
            raise _refuse(path, f"[{section}] is not a table that can take [{pin.table}]", pin)
        value = pin.entry()[pin.key]
        if table is not None and pin.key in table:
            if table[pin.key] == value:
                return None
            raise _refuse(
                path,
                f"[{pin.table}] has an entry for {pin.key!r} already ({table[pin.key]!r}); "
                "change it by hand if the new one should replace it",
                pin,
            )
        expected.setdefault(section, {}).setdefault(name, {})[pin.key] = value
        headers = list(_header_re(pin.table).finditer(text))
        if len(headers) == 1:
            end = headers[0].end()
            rest = text[end:]
            line_break = newline if not rest.startswith(("\n", "\r\n")) else ""
            if rest.startswith("\r\n"):
                end += 2
            elif rest.startswith("\n"):
                end += 1
            edited = text[:end] + line_break + newline.join(pin.lines()) + newline + text[end:]
        elif headers or table is not None:
            raise _refuse(
                path,
                f"[{pin.table}] is written in a form pin does not edit "
                "(inline table, dotted keys or repeated headers)",
                pin,
            )
        else:
            edited = _append(text, [f"[{pin.table}]", *pin.lines()], newline)
    try:
        reread = tomllib.loads(edited)
    except tomllib.TOMLDecodeError:
        raise _refuse(path, f"adding [{pin.table}] here would not be valid TOML", pin) from None
    if reread != expected:
        raise _refuse(path, f"adding [{pin.table}] here would change other settings", pin)
    return edited


# ------------------------------------------------------------------------------ checks


def _ca_pinning(prefix: str, ca_file: Path) -> TrustPinning:
    """A pinning with only this CA (its PEM bytes: the verifier reads no file)."""
    try:
        pem = ca_file.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read the CA file {ca_file}: {exc.strerror}") from None
    return TrustPinning(ca={prefix: pem})


def check_anchors(data: TrustData, pinning: TrustPinning, now: dt.datetime) -> None:
    """The verified root is accepted under `pinning` alone, by a pin (not first use)."""
    trusted = TrustedSet(data.gun, data.root_bytes, now=now, pinning=pinning)
    assert trusted.root_check is not None
    if trusted.root_check.tofu:
        raise TrustPinError(f"the pin does not apply to {data.gun}")


def pin_in_force(pinning: TrustPinning, gun: str) -> tuple[str, str] | None:
    """Which pin notary's trustPinChecker uses for `gun`: exact certs, the longest `*` certs
    wildcard, then the longest CA prefix (the same order as trust.notary.x509root)."""
    return pinning.applying(gun)


def _check_in_force(pin: Pin, ref: Reference, loaded: Configuration) -> None:
    """After the edit: the new pin is the one that applies to `ref` (nothing shadows it)."""
    if pin.kind == "rule":
        rule = repository_rule(loaded.policy, ref) if loaded.policy is not None else None
        if rule is None or rule.label != pin.rule_name:
            label = rule.label if rule is not None else "none"
            raise TrustPinError(
                f"the new rule {pin.rule_name} does not apply to {ref.name}: rule {label} does"
            )
        return
    if loaded.policy is not None:
        rule = repository_rule(loaded.policy, ref)
        if rule.root_keys or rule.root_ca:
            raise TrustPinError(
                f"rule {rule.label} ({rule.origin}) pins the root of {ref.name} itself, so a "
                f"[{pin.table}] entry would not apply",
                hint="use --rule NAME, or change that rule",
            )
    in_force = pin_in_force(_effective(ref, loaded).trust_pinning, ref.name)
    if in_force != (pin.kind, pin.key):
        where = f"[trust_pinning.{in_force[0]}] {in_force[1]!r}" if in_force else "nothing"
        raise TrustPinError(
            f"the new [{pin.table}] entry {pin.key!r} would not apply to {ref.name}: "
            f"{where} takes precedence"
        )


def _refuse_replacing_a_rule(pin: Pin, ref: Reference, loaded: Configuration, path: Path) -> None:
    """A new, more specific rule would replace every requirement of the rule that applies now
    (its signers, threshold, min_validity ...): refuse, and say where to add root_keys."""
    from trust.policy import BUILTIN_DEFAULT

    assert loaded.policy is not None
    current = repository_rule(loaded.policy, ref)
    if current is BUILTIN_DEFAULT or current.label == pin.rule_name:
        return
    keys = _toml_list(pin.key_ids)
    raise EditRefused(
        f"{path}: rule {current.label} ({current.origin}) applies to {ref.name}; a new rule "
        f"{pin.rule_name} would replace its requirements ({'; '.join(current.describe())})",
        hint=f"add root_keys = {keys} to rule {current.label} yourself, or pin with "
        "[trust_pinning.certs] (without --rule)",
    )


# ------------------------------------------------------------------------------ the command


@dataclass
class PinResult:
    """What `pin` found and did; rendered as text or JSON by the CLI."""

    reference: Reference
    verified: Verified
    certificates: list[RootCertificate]
    pin: Pin
    config: Path | None
    written: bool = False
    already: bool = False
    first_rules: bool = False
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.reference.name,
            "first_use": self.verified.first_use,
            "signed": [r.to_json() for r in self.verified.resolutions],
            "root_certificates": [c.to_json() for c in self.certificates],
            "pin": self.pin.to_json(),
            "config": str(self.config) if self.config is not None else None,
            "written": self.written,
            "already_present": self.already,
            "verified_with_pin": True,
        }


def _read_config(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        return ""
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: configuration file is not UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None


@contextmanager
def _candidate(directory: Path, text: str) -> Iterator[Path]:
    """`text` in a temporary file of `directory` (so relative paths mean the same)."""
    handle, name = tempfile.mkstemp(dir=directory, prefix=".trustpull-pin-", suffix=".toml")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
            out.write(text)
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


def _replace(path: Path, candidate: Path, original: str) -> None:
    """Atomically put `candidate` in place of `path`, if `path` still holds `original`."""
    if _read_config(path) != original:
        raise ConfigError(f"{path} changed while pin was running: not written; run pin again")
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = 0o600
    os.chmod(candidate, mode)
    os.replace(candidate, path)


def _wrapped(error: TrustpullError, message: str) -> TrustpullError:
    """A new error of the same kind and exit code, saying that nothing was written."""
    hint = "\n".join(h for h in (error.hint, "pin wrote nothing") if h)
    for klass in type(error).__mro__:  # the nearest class with the plain constructor
        if getattr(klass, "__init__", None) is TrustpullError.__init__:
            made: TrustpullError = klass(message, hint=hint)
            return made
    return TrustpullError(message, hint=hint)  # pragma: no cover (the base has it)


def make_pin(
    ref: Reference,
    verified: Verified,
    *,
    rule: str | None = None,
    ca: tuple[Path, str] | None = None,
) -> Pin:
    ids = tuple(sorted({c.canonical_id for c in root_certificates(verified.data)}))
    if ca is not None:
        ca_file, prefix = ca
        return Pin("ca", ref.name, ca_file=ca_file.resolve(), prefix=prefix)
    if rule is not None:
        return Pin("rule", ref.name, ids, rule_name=rule, registry=ref.domain, repository=ref.path)
    return Pin("certs", ref.name, ids)


def pin_repository(
    ref: Reference,
    *,
    config: Path | None,
    write: bool,
    environ: Mapping[str, str],
    rule: str | None = None,
    ca: tuple[Path, str] | None = None,
    notice: Callable[[str], None] | None = None,
    now: dt.datetime | None = None,
) -> PinResult:
    """Verify `ref`, build its pin, check it, and (with `write`) add it to `config`.

    `config` is the file to read (and write); None means the default configuration file.
    Nothing is written unless the repository verified, the pin alone accepts its root, the
    edited file passes the strict loader and the repository verifies again with it in force.
    """
    from trust.config import default_config_path

    path = config if config is not None else default_config_path(environ)
    path = Path(os.path.realpath(path))
    if write and not path.parent.is_dir():
        raise InputError(f"{path.parent} does not exist: cannot write {path.name} there")
    exists = path.is_file()
    original = _read_config(path) if exists else ""
    directory = path.parent if path.parent.is_dir() else Path(tempfile.gettempdir())
    if exists:
        loaded = load_config(environ, config_file=path)
    else:  # a file that does not exist yet is an empty configuration
        with _candidate(directory, "") as empty:
            loaded = load_config(environ, config_file=empty)
    origin = mirror_origin(ref, loaded.settings)
    if origin is not None:
        # A pin is for the GUN whose trust data is verified: a mirrored name's origin.
        if notice is not None:
            notice(f"mirror: {ref.name} is verified as {origin.name}: pinning {origin.name}")
        ref = origin
    if ca is not None:
        ca_file, prefix = ca
        if not ca_file.is_file():
            raise InputError(f"CA file {ca_file} does not exist")
        if not ref.name.startswith(prefix):
            raise InputError(f"CA prefix {prefix!r} does not cover {ref.name}")
    if select_source(ref, loaded.settings) is not None or (
        loaded.policy is not None
        and repository_rule(loaded.policy, ref).trust_source not in (None, "notary")
    ):
        raise InputError(
            f"{ref.name} is verified by a TUF repository (trust_sources): its root is the "
            "trust source's root file, not a Notary root pin"
        )

    try:
        verified = verify_repository(ref, loaded, notice=notice)
    except TrustpullError as error:
        if isinstance(error, TrustPinError) and error.message == PIN_NO_TOFU:
            raise TrustPinError(
                f"nothing is cached or pinned for {ref.name} and disable_tofu is set: "
                "pin does not trust a root on first use against that setting",
                hint="run pin where trust on first use is allowed (e.g. --config with a file "
                "without disable_tofu) and check the key ID it shows out of band",
            ) from error
        raise _wrapped(error, f"{ref.name} did not verify: {error.message}") from error
    pin = make_pin(ref, verified, rule=rule, ca=ca)
    if pin.kind == "rule" and loaded.policy is not None:
        _refuse_replacing_a_rule(pin, ref, loaded, path)
    moment = now or dt.datetime.now(dt.UTC)
    if pin.kind == "ca":
        assert pin.ca_file is not None and pin.prefix is not None
        pinning = _ca_pinning(pin.prefix, pin.ca_file)
    else:
        pinning = TrustPinning(certs={ref.name: pin.key_ids})
    try:
        check_anchors(verified.data, pinning, moment)
    except TrustpullError as error:
        raise TrustPinError(
            f"the {pin.table} pin does not accept the verified root of {ref.name}: {error.message}",
            hint="pin wrote nothing",
        ) from error

    edited = add_pin(original, pin, path)
    result = PinResult(
        ref, verified, root_certificates(verified.data), pin, path if exists or write else None
    )
    result.already = edited is None
    result.first_rules = pin.kind == "rule" and not tomllib.loads(original).get("rules")
    text = original if edited is None else edited
    with _candidate(directory, text) as candidate:
        try:
            pinned_settings = load_config(environ, config_file=candidate)
        except ConfigError as error:  # name the user's file, not the temporary copy
            raise ConfigError(
                error.message.replace(str(candidate), f"{path} (with the pin)"),
                hint="pin wrote nothing",
            ) from None
        try:
            _check_in_force(pin, ref, pinned_settings)
            again = verify_repository(ref, pinned_settings)
        except TrustpullError as error:
            raise _wrapped(error, f"with the pin in force: {error.message}") from error
        if again.data.root_check.tofu:
            raise TrustPinError(f"with the pin in force, {ref.name} was not checked against it")
        if write and edited is not None:
            _replace(path, candidate, original)
            result.written = True
    return result
