#!/usr/bin/env python3
"""py_test_router_errors.py - bad routing keys in config.json give one clear line and exit 1.

Each case takes configs/routers/topk-lbl.json, breaks one routing key, and runs `moec info` on a
checkpoint directory holding that config (the config is read before any tensor) and `moec train
--config` on it: both must exit 1 with exactly one stderr line that names the key. A control
case (the unbroken config) must get past config reading. Ends with `N passed, M failed`."""
import argparse
import json
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(HERE, "ref"))
from checks import check, run, summary  # noqa: E402

CASES = [  # (what, overrides, word the message must contain)
    ("unknown router", {"moec_router": "no_such_router"}, "moec_router"),
    ("unknown scoring_func", {"scoring_func": "tanh"}, "scoring_func"),
    ("unknown topk_method", {"topk_method": "best"}, "topk_method"),
    ("n_group without a group method", {"topk_method": "greedy", "n_group": 4, "topk_group": 2}, "n_group"),
    ("n_group not dividing the experts", {"topk_method": "group_limited_greedy", "n_group": 3, "topk_group": 1},
     "n_group"),
    ("topk_group above n_group", {"topk_method": "group_limited_greedy", "n_group": 2, "topk_group": 4},
     "topk_group"),
    ("negative aux coefficient", {"router_aux_loss_coef": -1}, "router_aux_loss_coef"),
    ("jitter of 1", {"router_jitter_noise": 1.0}, "router_jitter_noise"),
    ("unknown LBL scope", {"moec_aux_loss_scope": "everything"}, "moec_aux_loss_scope"),
    ("unknown drop policy", {"moec_drop_policy": "random"}, "moec_drop_policy"),
    ("capacity factor as a string", {"moec_capacity_factor": "1.25"}, "moec_capacity_factor"),
    ("topk softmax with sigmoid scores", {"scoring_func": "sigmoid", "moec_topk_softmax": True}, "softmax"),
    # issue 10's routers (route)
    ("top-p threshold of 1", {"moec_router": "topp", "moec_top_p": 1.0}, "moec_top_p"),
    ("top-p threshold as a string", {"moec_router": "topp", "moec_top_p": "0.4"}, "moec_top_p"),
    ("non-causal decode router", {"moec_router": "expert_choice", "moec_decode_router": "expert_choice"},
     "moec_decode_router"),
    ("unknown decode router", {"moec_router": "expert_choice", "moec_decode_router": "nope"}, "moec_decode_router"),
    ("expert choice with a capacity factor", {"moec_router": "expert_choice", "moec_capacity_factor": 1.25},
     "moec_capacity_factor"),
    ("moge groups not dividing k", {"moec_router": "moge", "n_group": 4}, "n_group"),
    ("hash with two experts per token", {"moec_router": "hash", "router_aux_loss_coef": 0.0}, "num_experts_per_tok"),
    ("hash with an LBL", {"moec_router": "hash", "num_experts_per_tok": 1, "router_aux_loss_coef": 0.01},
     "router_aux_loss_coef"),
    ("thor with two experts per token", {"moec_router": "thor", "router_aux_loss_coef": 0.0}, "num_experts_per_tok"),
    ("evomoe tau_min above tau_max", {"moec_router": "evomoe", "moec_tau_min": 3.0, "moec_tau_max": 2.0}, "moec_tau_min"),
    ("evomoe unknown schedule", {"moec_router": "evomoe", "moec_tau_schedule": "cosine"}, "moec_tau_schedule"),
    ("evomoe negative tau steps", {"moec_router": "evomoe", "moec_tau_steps": 0}, "moec_tau_steps"),
    ("router_scale as a string", {"moec_router": "moge", "n_group": 2, "moec_router_scale": "yes"}, "moec_router_scale"),
    ("hash table for a topk router", {"moec_hash_table": "balanced"}, "moec_hash_table"),
    ("unknown hash table", {"moec_router": "hash", "num_experts_per_tok": 1, "router_aux_loss_coef": 0.0,
                            "router_z_loss_coef": 0.0, "moec_hash_table": "sorted"}, "moec_hash_table"),
    ("label smoothing of 1", {"moec_label_smoothing": 1.0}, "moec_label_smoothing"),
    ("negative label smoothing", {"moec_label_smoothing": -0.1}, "moec_label_smoothing"),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--moec", required=True)
    ap.add_argument("--build-dir", default=None)
    moec = ap.parse_args().moec
    base = json.load(open(os.path.join(ROOT, "configs", "routers", "topk-lbl.json")))
    root = tempfile.mkdtemp(prefix="moec_router_err_")
    try:
        for what, over, word in [("control", {}, None)] + CASES:
            d = os.path.join(root, "ckpt")
            os.makedirs(d, exist_ok=True)
            cfg = dict(base, **over)
            json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
            r = run([moec, "info", "-m", d], timeout=60)
            lines = [l for l in r.stderr.splitlines() if l.strip()]
            if word is None:  # the config reads: the error is about the missing weights
                check(r.returncode == 1 and len(lines) == 1 and "safetensors" in lines[0],
                      "control: the unbroken config is read (then the weights are missing)", repr(r.stderr.strip()))
                continue
            check(r.returncode == 1 and len(lines) == 1 and word in lines[0],
                  f"info, {what}: one line naming {word}, exit 1", repr(r.stderr.strip()))
            r = run([moec, "train", "--config", os.path.join(d, "config.json"), "--data", root, "--out",
                     os.path.join(root, "out"), "--steps", "1"], timeout=60)
            lines = [l for l in r.stderr.splitlines() if l.strip()]
            check(r.returncode == 1 and len(lines) == 1 and word in lines[0],
                  f"train, {what}: one line naming {word}, exit 1", repr(r.stderr.strip()))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return summary()


if __name__ == "__main__":
    sys.exit(main())
