"""The Augmentation policies section: each policy the sweep used, its two views as a trial recorded
them (tag byol_sweep.policy_definition), and the pictures the driver drew of them (8 dataset images,
draws of T and T' at 1.0 and at the strength the sweep selected), so a reader sees what was compared."""
from __future__ import annotations

import json

from reports.load import Sweep
from reports.render import Code, Heading, Image, Para, slug


def definition_text(text: str) -> str:
    """A recorded definition, one op a line: `T: crop scale=[0.08, 1.0] ratio=[...]`."""
    try:
        views = json.loads(text)
    except ValueError:
        return text
    lines = []
    for view, ops in views.items():
        for op, params in ops.items():
            settings = " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
            lines.append(f"{view:8s}{op:13s}{settings}")
    return "\n".join(lines)


def policies_section(s: Sweep, level: int, prefix: str) -> list:
    policies = list(dict.fromkeys([*s.policy_definitions, *(v.get("policy") for v in s.views if v.get("policy"))]))
    if not policies:
        return []
    out = [Heading("Augmentation policies", level),
           Para("Each policy's two views, op by op in the order they run (parameters at aug_strength 1.0; a searched "
                "op parameter varies by trial, see its column), and 8 of the dataset's images with draws of T and T'.")]
    for policy in policies:
        out.append(Heading(policy, level + 1))
        if policy in s.policy_definitions:
            out.append(Code(definition_text(s.policy_definitions[policy])))
        for view in (v for v in s.views if v.get("policy") == policy):
            label = view.get("label") or f"at aug_strength {view.get('strength')}"
            if view.get("png"):
                out.append(Image(f"{prefix}views-{slug(policy)}-{slug(str(view.get('strength')))}.png", view["png"],
                                 f"views of {policy} {label}"))
            else:
                out.append(Para(f"The picture of {policy}'s views {label} is not in the MLflow store.", note=True))
    return out
