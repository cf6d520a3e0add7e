"""Run SRFlow's three training stages one after another, each stage's weights feeding the next.

    python scripts/train_srflow_pipeline.py -opt options/demo/srflow_pipeline.yml [--set STAGE:key=value ...]

A pipeline recipe lists stages; each names an ordinary training recipe plus `set:` overrides, and
`rrdb_from: STAGE` (that stage's final weights become `networks.generator.pretrain_rrdb`) or
`weights_from: STAGE` (they become `path.pretrain_model_generator`). Every stage trains in its own
experiment folder `<pipeline>_<stage>` with `--resume auto`, so re-running the command after an
interruption continues where it stopped and skips finished stages. A summary of the validation numbers
is printed at the end, and `experiments/<pipeline>/val_nll.png` plots the validation NLL across the stages
(also to TensorBoard in `experiments/<pipeline>/tb_logger` when the last stage has `use_tb_logger` on).
"""
import argparse
import importlib.util
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inference.pictures import nll_figure, save_figure  # noqa: E402
from trainer import checkpoint  # noqa: E402
from trainer.trainer import Trainer  # noqa: E402
from utils.cli import run_cli  # noqa: E402
from utils.errors import ConfigError, closest  # noqa: E402
from utils.options import find_recipe, load_yaml, parse_options  # noqa: E402

STAGE_KEYS = {"name", "recipe", "set", "rrdb_from", "weights_from"}


def load_pipeline(path: str) -> Dict[str, Any]:
    source = find_recipe(path)
    raw = load_yaml(source)
    if set(raw) != {"pipeline"} or not isinstance(raw["pipeline"], dict):
        raise ConfigError(f"{source}: a pipeline recipe has a single top-level key `pipeline`")
    spec = raw["pipeline"]
    if not isinstance(spec.get("name"), str) or not isinstance(spec.get("stages"), list) or not spec["stages"]:
        raise ConfigError(f"{source}: `pipeline` needs `name` (a string) and `stages` (a non-empty list)")
    seen: List[str] = []
    for i, stage in enumerate(spec["stages"]):
        where = f"pipeline.stages[{i}]"
        for key in stage:
            if key not in STAGE_KEYS:
                raise ConfigError(f"{source}: unknown key `{where}.{key}`{closest(key, STAGE_KEYS)}")
        if "name" not in stage or "recipe" not in stage:
            raise ConfigError(f"{source}: `{where}` needs `name` and `recipe`")
        for key in ("rrdb_from", "weights_from"):
            if key in stage and stage[key] not in seen:
                raise ConfigError(f"{source}: `{where}.{key}` names `{stage[key]}`, which is not an earlier stage"
                                  f"{closest(stage[key], seen)}")
        seen.append(stage["name"])
    return spec


def final_weights(opt: Dict[str, Any], network: str = "generator") -> Path:
    """The stage's last weights: their moving average when the stage kept one."""
    return checkpoint.final_weights(Path(opt["path"]["models"]), opt["train"]["niter"], network,
                                    opt["logger"]["weights_format"])


def run_stage(pipeline: str, stage: Dict[str, Any], done: Dict[str, Dict[str, Any]], extra: List[str]) -> Dict[str, Any]:
    overrides = [f"name={pipeline}_{stage['name']}"] + list(stage.get("set", []))
    if "rrdb_from" in stage:
        overrides.append(f"networks.generator.pretrain_rrdb={final_weights(done[stage['rrdb_from']]['opt'])}")
    if "weights_from" in stage:
        overrides.append(f"path.pretrain_model_generator={final_weights(done[stage['weights_from']]['opt'])}")
        if "pretrain_rrdb" in load_yaml(find_recipe(stage["recipe"]))["networks"]["generator"]:
            overrides.append("networks.generator.pretrain_rrdb=")  # the full weights replace it anyway
    overrides += [o.split(":", 1)[1] for o in extra if o.split(":", 1)[0] == stage["name"]]
    opt = parse_options(stage["recipe"], overrides)
    # A stage that finished earlier resumes at its end: nothing to train, its last validation runs again
    # (a checkpoint is saved before its validation), and its history comes back whole.
    trainer = Trainer(opt, resume="auto")
    if trainer.it >= opt["train"]["niter"]:
        print(f"== stage `{stage['name']}` already finished ({trainer.resume_path}); validating it only")
    else:
        print(f"== stage `{stage['name']}`: {stage['recipe']} {' '.join(overrides)}")
    return {"opt": opt, "history": trainer.fit()}


def series(history: List[Dict[str, Any]], suffix: str) -> List[Tuple[int, float]]:
    """(iteration, value) of the first metric whose name ends with `suffix`, in validation order."""
    for row in history:
        for key in row:
            if key.endswith(suffix):
                return [(r["iter"], r[key]) for r in history if key in r]
    return []


def metric(history: List[Dict[str, Any]], suffix: str) -> List[float]:
    return [v for _, v in series(history, suffix)]


def plot_nll(name: str, done: Dict[str, Dict[str, Any]]) -> str:
    """Draw the validation NLL of every stage, one after another with their boundaries marked; say where."""
    if importlib.util.find_spec("matplotlib") is None:
        return "NLL plot skipped: matplotlib is not installed (pip install -r requirements.txt)"
    last = list(done.values())[-1]["opt"]
    folder = Path(last["path"]["experiments_root"]).parent / name
    stages = [(stage, r["opt"]["train"]["niter"], series(r["history"], "/nll_bpd")) for stage, r in done.items()]
    tensorboard = None
    if last.get("use_tb_logger") and importlib.util.find_spec("tensorboard"):
        tensorboard = folder / "tb_logger"
    save_figure(nll_figure(stages), folder / "val_nll.png", tensorboard, "pipeline/val_nll_bpd")
    return f"  validation NLL across the stages: {folder / 'val_nll.png'}"


def summary(done: Dict[str, Dict[str, Any]]) -> str:
    lines = ["", "== pipeline summary"]
    for name, result in done.items():
        h = result["history"]
        parts = []
        for label, suffix in (("PSNR", "/psnr"), ("PSNR t=0", "/psnr_t0"), ("RRDB PSNR", "/psnr_rrdb"),
                              ("bicubic PSNR", "/psnr_bicubic")):
            values = metric(h, suffix)
            if values:
                parts.append(f"{label} {values[-1]:.2f} dB")
        nll = metric(h, "/nll_bpd")
        if nll:
            parts.append("val NLL (bits/dim) " + " -> ".join(f"{v:.3f}" for v in nll))
        lines.append(f"  {name}: " + "; ".join(parts))
    stages = list(done.values())
    first = metric(stages[0]["history"], "/psnr")
    last = metric(stages[-1]["history"], "/psnr_t0")
    if len(stages) > 1 and first and last:
        lines.append(f"  t=0 PSNR of the last stage vs the first stage's PSNR: {last[-1] - first[-1]:+.2f} dB")
    return "\n".join(lines)


def pictures(name: str, done: Dict[str, Dict[str, Any]]) -> str:
    """The first and the last stage's SR of each validation photo beside bicubic and HQ, zoomed in
    (inference/showcase.py), in experiments/<pipeline>/comparison/; their PSNRs, and where the pictures are."""
    from inference.showcase import compare_networks
    stages = list(done.items())
    picked = [(stage, r["opt"], final_weights(r["opt"])) for stage, r in (stages[:1] + stages[1:][-1:])]
    folder = Path(stages[-1][1]["opt"]["path"]["experiments_root"]).parent / name / "comparison"
    return "\n".join(["== comparison pictures (validation photos, Y-PSNR)"] + compare_networks(picked, folder))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-opt", "--opt", required=True, help="pipeline recipe")
    parser.add_argument("--set", action="append", default=[], metavar="STAGE:KEY=VALUE",
                        help="override a key of one stage, e.g. --set joint:train.niter=100")
    args = parser.parse_args()

    def pipeline() -> None:
        spec = load_pipeline(args.opt)
        done: Dict[str, Dict[str, Any]] = {}
        for stage in spec["stages"]:
            done[stage["name"]] = run_stage(spec["name"], stage, done, args.set)
        print(summary(done))
        print(plot_nll(spec["name"], done))
        print(pictures(spec["name"], done))

    return run_cli(pipeline)


if __name__ == "__main__":
    sys.exit(main())
