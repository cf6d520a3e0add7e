"""What a checkpoint holds besides the weights: everything a resumed run needs to continue exactly where the
saved one stopped. `training_state/<iteration>.state` holds `TrainingState.to_dict()`."""
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional


@dataclass
class TrainingState:
    iteration: int  # iterations done
    epoch: int
    sample_in_epoch: int  # samples of this epoch already drawn (the sampler continues after them)
    steps: Dict[str, Any]  # each recipe step's optimizer state, by step name
    scaler: Optional[Dict[str, Any]]  # fp16's gradient scaler
    rng: List[Dict[str, Any]]  # random generators' states, one per process of the run that saved it
    metrics_history: List[Dict[str, Any]]  # every validation's numbers
    freezing: Dict[str, Any]  # the RRDB freeze policy's memory (trainer/rrdb_freezing.py)
    opt: Dict[str, Any]  # the recipe the run trained with (trainer/recipe_changes.py compares it on resume)
    model_files: Dict[str, str] = field(default_factory=dict)  # weight files under models/, by network (and EMA)
    lineage: List[Dict[str, Any]] = field(default_factory=list)  # the run's own checkpoints (what it may prune)

    def to_dict(self) -> Dict[str, Any]:
        out = asdict(self)
        out["iter"] = out.pop("iteration")  # DLAS's name in the file
        return out

    @classmethod
    def from_dict(cls, state: Dict[str, Any]) -> "TrainingState":
        values = dict(state)
        values["iteration"] = values.pop("iter")
        values.pop("ema", None)  # checkpoints written before the EMA was saved once: its weights file holds it
        return cls(**values)
