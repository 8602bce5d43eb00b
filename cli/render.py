"""Text renderings of result objects (the JSON ones are the objects' own `to_json`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

REPO_ADMIN = "Repo Admin"


def tabwrite(rows: Sequence[Sequence[str]], *, min_width: int = 10, padding: int = 3) -> str:
    """Go's tabwriter as docker configures it: every column but the last padded to its widest
    cell plus `padding`, at least `min_width`, with spaces."""
    if not rows:
        return ""
    columns = max(len(row) for row in rows)
    widths = [0] * columns
    for row in rows:
        for index, cell in enumerate(row[:-1]):
            widths[index] = max(widths[index], len(cell) + padding, min_width)
    lines = []
    for row in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        lines.append("".join(cells) + row[-1])
    return "\n".join(lines) + "\n"


def _one_inspect_block(document: dict[str, Any]) -> str:
    from trust.lookup import natural_key  # the verifier's module: not needed by tabwrite

    remote = document["Name"]
    out = []
    signed = document["SignedTags"]
    if signed:
        out.append(f"\nSignatures for {remote}\n\n")
        rows = [["SIGNED TAG", "DIGEST", "SIGNERS"]]
        for entry in signed:
            signers = sorted(entry["Signers"])
            shown = ", ".join(f"({s})" if s == REPO_ADMIN else s for s in signers)
            rows.append([entry["SignedTag"], entry["Digest"], shown])
        out.append(tabwrite(rows))
    else:
        out.append(f"\nNo signatures for {remote}\n\n")
    signers = document["Signers"]
    if signers:
        out.append(f"\nList of signers and their keys for {remote}\n\n")
        rows = [["SIGNER", "KEYS"]]
        for signer in sorted(signers, key=lambda s: natural_key(s["Name"])):
            keys = sorted(key["ID"][:12] for key in signer["Keys"])
            rows.append([signer["Name"], ", ".join(keys)])
        out.append(tabwrite(rows))
    out.append(f"\nAdministrative keys for {remote}\n\n")
    # docker sorts by notary role name descending: "targets" (Repository) before "root" (Root).
    role_names = {"Repository": "targets", "Root": "root"}
    admins = sorted(
        document["AdministrativeKeys"],
        key=lambda a: role_names.get(a["Name"], a["Name"]),
        reverse=True,
    )
    for admin in admins:
        admin_keys = ", ".join(sorted(key["ID"] for key in admin["Keys"]))
        out.append(f"  {admin['Name']} Key:\t{admin_keys}\n")
    return "".join(out)


def render_inspect_pretty(documents: Sequence[dict[str, Any]]) -> str:
    """`docker trust inspect --pretty`: blocks separated by a blank line (dct.md §1.11)."""
    return "\n\n".join(_one_inspect_block(document) for document in documents)
