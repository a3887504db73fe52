"""Train or eval, drawn per near-duplicate cluster and stably, so no paraphrase of an eval
question is ever trained on."""

import hashlib

from retrain.models import InstructionExample


def split_for_cluster(*, project_id: int, cluster: int, eval_fraction: float) -> str:
    """A stable pseudo-random draw per cluster: the same cluster always lands in the same
    split, whatever order examples arrive in."""
    digest = hashlib.sha256(f"{project_id}:{cluster}".encode()).digest()
    draw = int.from_bytes(digest[:8], "big") / 2**64
    return InstructionExample.Split.EVAL if draw < eval_fraction else InstructionExample.Split.TRAIN
