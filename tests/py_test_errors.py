#!/usr/bin/env python3
"""py_test_errors.py - moec must reject broken checkpoints and bad arguments cleanly.

Run by ctest from the repo root:
    <python> tests/py_test_errors.py --moec <moec binary> --build-dir <build dir>

Each case builds a broken checkpoint under <build-dir>/err_models/<case>/ from a good tiny
one (tests/ref/make_tiny.py) and runs `moec logits -m DIR --ids 1,2,3 -o X.npy` (or
`moec info -m DIR`). It requires exit code 1 (not 0, not a signal), stderr exactly one
non-empty line starting with "moec ", no sanitizer/crash text, and a case-insensitive
keyword that names the problem. Before running moec, each case also verifies that the
broken checkpoint really has the defect it claims (and only where stated, no other).
Control cases check that the good checkpoints themselves are accepted.
Ends with `N passed, M failed`; exits 1 on any failure. --gen-only only builds and
verifies the broken checkpoints (no moec binary needed).
"""

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "ref"))

import make_tiny  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

RUN_TIMEOUT = 60
CRASH_MARKERS = ("AddressSanitizer", "LeakSanitizer", "runtime error", "Segmentation", "core dumped",
                 "Assertion", "Aborted")
BASE = "mixtral"                  # single-file BF16 base for most cases
SHARDED = "qwen3_moe_sharded"     # base for index/shard cases
QWEN2 = "qwen2_moe"               # base for rope_scaling (a field Qwen configs really have)

# tensors the cases modify (all exist in the BASE model)
SHAPE_T = "model.layers.0.self_attn.q_proj.weight"                 # [64, 64] -> [32, 128]
MISSING_T = "model.layers.1.block_sparse_moe.experts.5.w2.weight"
EXTRA_T = "model.layers.0.block_sparse_moe.experts.0.w4.weight"
DTYPE_T = "model.layers.0.post_attention_layernorm.weight"
OVL_A = "model.layers.0.block_sparse_moe.experts.0.w1.weight"
OVL_B = "model.layers.0.block_sparse_moe.experts.0.w3.weight"
OFFS_T = "model.layers.1.self_attn.k_proj.weight"
MISSING_SHARD = "model-00002-of-00003.safetensors"


# ----------------------------------------------------------------------------- safetensors bytes
def st_read(path):
    """(header dict incl. __metadata__, data bytes) of a well-formed file."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def st_write(path, header, data, hlen_override=None):
    """Write header + data; header padded with spaces to 8-byte alignment like the reference
    writer. hlen_override replaces the length field (to forge a bad one)."""
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * ((-len(hb)) % 8)
    n = len(hb) if hlen_override is None else hlen_override
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", n) + hb + data)


def st_header_raw(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    return n, len(raw), raw


# ----------------------------------------------------------------------------- case builders
def copy_model(src, dst):
    if os.path.exists(dst):
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    return dst


def edit_config(d, fn):
    p = os.path.join(d, "config.json")
    with open(p) as f:
        cfg = json.load(f)
    fn(cfg)
    with open(p, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)


def rewrite_header(d, fn, fname="model.safetensors"):
    p = os.path.join(d, fname)
    hdr, data = st_read(p)
    fn(hdr, data)
    st_write(p, hdr, data)


def b_truncated(d):
    p = os.path.join(d, "model.safetensors")
    n, size, raw = st_header_raw(p)
    cut = 8 + n + (size - 8 - n) * 6 // 10
    with open(p, "wb") as f:
        f.write(raw[:cut])


def v_truncated(d):
    p = os.path.join(d, "model.safetensors")
    n, size, raw = st_header_raw(p)
    hdr = json.loads(raw[8:8 + n])
    need = max(v["data_offsets"][1] for k, v in hdr.items() if k != "__metadata__")
    return size < 8 + n + need


def b_header_len_big(d):
    p = os.path.join(d, "model.safetensors")
    n, size, raw = st_header_raw(p)
    with open(p, "wb") as f:
        f.write(struct.pack("<Q", size) + raw[8:])   # larger than the file


def v_header_len_big(d):
    n, size, _ = st_header_raw(os.path.join(d, "model.safetensors"))
    return n > size - 8


def b_header_len_huge(d):
    p = os.path.join(d, "model.safetensors")
    n, size, raw = st_header_raw(p)
    with open(p, "wb") as f:
        f.write(struct.pack("<Q", (1 << 63) + 5) + raw[8:])


def v_header_len_huge(d):
    n, _, _ = st_header_raw(os.path.join(d, "model.safetensors"))
    return n >= 1 << 63


def b_header_garbage(d):
    p = os.path.join(d, "model.safetensors")
    n, size, raw = st_header_raw(p)
    bad = bytearray(raw)
    bad[8:8 + 12] = b'{"x": [1, 2@'  # invalid JSON; same byte count, so the length field still fits
    with open(p, "wb") as f:
        f.write(bytes(bad))


def v_header_garbage(d):
    n, _, raw = st_header_raw(os.path.join(d, "model.safetensors"))
    try:
        json.loads(raw[8:8 + n])
        return False
    except ValueError:
        return True


def b_offset_range(d):
    def fn(hdr, data):
        b, e = hdr[OFFS_T]["data_offsets"]
        nb = len(data) + 64
        hdr[OFFS_T]["data_offsets"] = [nb, nb + (e - b)]   # size still matches the shape
    rewrite_header(d, fn)


def v_offset_range(d):
    hdr, data = st_read(os.path.join(d, "model.safetensors"))
    b, e = hdr[OFFS_T]["data_offsets"]
    return e > len(data) and b > len(data)


def b_overlap(d):
    def fn(hdr, data):
        assert hdr[OVL_A]["shape"] == hdr[OVL_B]["shape"] and hdr[OVL_A]["dtype"] == hdr[OVL_B]["dtype"]
        hdr[OVL_B]["data_offsets"] = list(hdr[OVL_A]["data_offsets"])
    rewrite_header(d, fn)


def v_overlap(d):
    hdr, data = st_read(os.path.join(d, "model.safetensors"))
    a, b = hdr[OVL_A]["data_offsets"], hdr[OVL_B]["data_offsets"]
    return a[0] < b[1] and b[0] < a[1] and max(a[1], b[1]) <= len(data)


def _set_dtype(value):
    def build(d):
        def fn(hdr, data):
            hdr[DTYPE_T]["dtype"] = value    # I16 / unknown: same 2 bytes per element as BF16
        rewrite_header(d, fn)

    def verify(d):
        hdr, data = st_read(os.path.join(d, "model.safetensors"))
        b, e = hdr[DTYPE_T]["data_offsets"]
        return hdr[DTYPE_T]["dtype"] == value and e - b == 2 * int(np.prod(hdr[DTYPE_T]["shape"]))
    return build, verify


def b_shape(d):
    def fn(hdr, data):
        r, c = hdr[SHAPE_T]["shape"]
        hdr[SHAPE_T]["shape"] = [r // 2, c * 2]          # same element count, wrong shape
    rewrite_header(d, fn)


def v_shape(d):
    t = load_file(os.path.join(d, "model.safetensors"))   # still a valid file
    return list(t[SHAPE_T].shape) == [32, 128]


def b_missing(d):
    p = os.path.join(d, "model.safetensors")
    t = load_file(p)
    del t[MISSING_T]
    save_file(t, p, metadata={"format": "pt"})


def v_missing(d):
    return MISSING_T not in load_file(os.path.join(d, "model.safetensors"))


def b_extra(d):
    p = os.path.join(d, "model.safetensors")
    t = load_file(p)
    t[EXTRA_T] = t[OVL_A].clone()
    save_file(t, p, metadata={"format": "pt"})


def v_extra(d):
    return EXTRA_T in load_file(os.path.join(d, "model.safetensors"))


def b_config_malformed(d):
    with open(os.path.join(d, "config.json"), "w") as f:
        f.write('{\n  "model_type": "mixtral",\n  "hidden_size": 64,\n  "num_hidden_layers": \n')


def v_config_malformed(d):
    try:
        json.load(open(os.path.join(d, "config.json")))
        return False
    except ValueError:
        return True


def b_config_missing(d):
    os.remove(os.path.join(d, "config.json"))


def v_config_missing(d):
    return not os.path.exists(os.path.join(d, "config.json"))


def b_no_hidden_size(d):
    edit_config(d, lambda c: c.pop("hidden_size"))


def v_no_hidden_size(d):
    return "hidden_size" not in json.load(open(os.path.join(d, "config.json")))


def b_model_type(d):
    def fn(c):
        c["model_type"] = "deepseek_v2"
        c["architectures"] = ["DeepseekV2ForCausalLM"]
    edit_config(d, fn)


def v_model_type(d):
    return json.load(open(os.path.join(d, "config.json")))["model_type"] == "deepseek_v2"


def b_rope_scaling(d):
    edit_config(d, lambda c: c.__setitem__("rope_scaling", {"type": "linear", "factor": 2.0}))


def v_rope_scaling(d):
    return json.load(open(os.path.join(d, "config.json")))["rope_scaling"] == {"type": "linear", "factor": 2.0}


def b_sliding_window(d):
    edit_config(d, lambda c: c.__setitem__("sliding_window", 4096))


def v_sliding_window(d):
    c = json.load(open(os.path.join(d, "config.json")))
    return c["model_type"] == "mixtral" and c["sliding_window"] == 4096


def _cfg(d):
    return json.load(open(os.path.join(d, "config.json")))


def b_alias_agree(d):
    edit_config(d, lambda c: c.__setitem__("num_experts", c["num_local_experts"]))


def v_alias_agree(d):
    c = _cfg(d)
    return c["num_experts"] == c["num_local_experts"]


def b_alias_disagree(d):
    edit_config(d, lambda c: c.__setitem__("num_experts", c["num_local_experts"] // 2))


def v_alias_disagree(d):
    c = _cfg(d)
    return c["num_experts"] != c["num_local_experts"]


def b_rope_unknown(d):
    edit_config(d, lambda c: c.__setitem__("rope_parameters", {"rope_type": "longrope2", "rope_theta": 10000.0}))


def v_rope_unknown(d):
    return _cfg(d)["rope_parameters"]["rope_type"] == "longrope2"


def b_rope_llama3_partial(d):
    edit_config(d, lambda c: c.__setitem__("rope_parameters", {"rope_type": "llama3", "factor": 8.0}))


def v_rope_llama3_partial(d):
    return "low_freq_factor" not in _cfg(d)["rope_parameters"]


def b_theta_disagree(d):
    def f(c):
        c["rope_theta"] = 10000.0
        c["rope_parameters"] = {"rope_type": "default", "rope_theta": 20000.0}
    edit_config(d, f)


def v_theta_disagree(d):
    c = _cfg(d)
    return c["rope_theta"] != c["rope_parameters"]["rope_theta"]


def b_rope_both(d):
    def f(c):
        c["rope_parameters"] = {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}
        c["rope_scaling"] = {"rope_type": "dynamic", "factor": 2.0}
    edit_config(d, f)


def v_rope_both(d):
    c = _cfg(d)
    return c["rope_parameters"]["rope_type"] != c["rope_scaling"]["rope_type"]


def b_head_dim_bad(d):
    edit_config(d, lambda c: c.__setitem__("head_dim", 2 * c["hidden_size"] // c["num_attention_heads"]))


def v_head_dim_bad(d):
    c = _cfg(d)
    return c["head_dim"] != c["hidden_size"] // c["num_attention_heads"]


def b_sliding_window_any(d):
    edit_config(d, lambda c: c.__setitem__("sliding_window", 8))


def v_sliding_window_any(d):
    return _cfg(d)["sliding_window"] == 8


def b_missing_shard(d):
    os.remove(os.path.join(d, MISSING_SHARD))


def v_missing_shard(d):
    idx = json.load(open(os.path.join(d, "model.safetensors.index.json")))
    return MISSING_SHARD in idx["weight_map"].values() and not os.path.exists(os.path.join(d, MISSING_SHARD))


def b_qwen_window_off(d):
    def fn(c):
        c["sliding_window"] = 4096        # as many hub Qwen configs have it: ignored while
        c["use_sliding_window"] = False   # use_sliding_window is false
    edit_config(d, fn)


def v_qwen_window_off(d):
    c = json.load(open(os.path.join(d, "config.json")))
    return c["sliding_window"] == 4096 and c["use_sliding_window"] is False


def b_none(d):
    pass


def v_true(d):
    return True


# (name, base model, builder, verifier, command, ids, keywords (any of, case-insensitive; a tuple
#  inside means all of), expect_ok)
def cases(err_root):
    dtype_i16 = _set_dtype("I16")
    dtype_unknown = _set_dtype("BF17")
    nonexist = os.path.join(err_root, "does_not_exist")
    return [
        ("control_logits", BASE, b_none, v_true, "logits", "1,2,3", (), True),
        ("control_logits_sharded", SHARDED, b_none, v_true, "logits", "1,2,3", (), True),
        ("control_info", BASE, b_none, v_true, "info", None, (), True),
        ("control_qwen2_sliding_window_unused", QWEN2, b_qwen_window_off, v_qwen_window_off, "logits", "1,2,3",
         (), True),
        ("truncated_file", BASE, b_truncated, v_truncated, "logits", "1,2,3",
         ("truncat", "past end", "bounds"), False),
        ("header_len_larger_than_file", BASE, b_header_len_big, v_header_len_big, "logits", "1,2,3",
         ("header",), False),
        ("header_len_huge", BASE, b_header_len_huge, v_header_len_huge, "logits", "1,2,3", ("header",), False),
        ("header_not_json", BASE, b_header_garbage, v_header_garbage, "logits", "1,2,3", ("header",), False),
        ("header_len_larger_than_file_info", BASE, b_header_len_big, v_header_len_big, "info", None,
         ("header",), False),
        ("data_offsets_out_of_range", BASE, b_offset_range, v_offset_range, "logits", "1,2,3",
         ("offset",), False),
        ("data_offsets_overlap", BASE, b_overlap, v_overlap, "logits", "1,2,3", ("overlap",), False),
        ("dtype_I16", BASE, dtype_i16[0], dtype_i16[1], "logits", "1,2,3", ("dtype",), False),
        ("dtype_unknown", BASE, dtype_unknown[0], dtype_unknown[1], "logits", "1,2,3", ("dtype",), False),
        ("wrong_shape", BASE, b_shape, v_shape, "logits", "1,2,3", (("shape", SHAPE_T),), False),
        ("missing_tensor", BASE, b_missing, v_missing, "logits", "1,2,3", (MISSING_T,), False),
        ("extra_tensor", BASE, b_extra, v_extra, "logits", "1,2,3", (EXTRA_T,), False),
        ("config_malformed", BASE, b_config_malformed, v_config_malformed, "logits", "1,2,3",
         ("config.json",), False),
        ("config_malformed_info", BASE, b_config_malformed, v_config_malformed, "info", None,
         ("config.json",), False),
        ("config_missing", BASE, b_config_missing, v_config_missing, "logits", "1,2,3", ("config.json",), False),
        ("config_no_hidden_size", BASE, b_no_hidden_size, v_no_hidden_size, "logits", "1,2,3",
         ("hidden_size",), False),
        ("unknown_model_type", BASE, b_model_type, v_model_type, "logits", "1,2,3", ("model_type",), False),
        ("unknown_model_type_info", BASE, b_model_type, v_model_type, "info", None, ("model_type",), False),
        # scaled RoPE and sliding windows are implemented (checked against transformers in py_test_hf.py)
        ("control_rope_scaling_linear", QWEN2, b_rope_scaling, v_rope_scaling, "logits", "1,2,3", (), True),
        ("control_mixtral_sliding_window", BASE, b_sliding_window, v_sliding_window, "logits", "1,2,3", (), True),
        ("control_alias_num_experts_agree", BASE, b_alias_agree, v_alias_agree, "logits", "1,2,3", (), True),
        ("rope_type_unknown", QWEN2, b_rope_unknown, v_rope_unknown, "logits", "1,2,3",
         (("rope_type", "longrope2"),), False),
        ("rope_type_unknown_info", QWEN2, b_rope_unknown, v_rope_unknown, "info", None,
         (("rope_type", "longrope2"),), False),
        ("rope_llama3_missing_factor", QWEN2, b_rope_llama3_partial, v_rope_llama3_partial, "logits", "1,2,3",
         (("low_freq_factor",),), False),
        ("alias_num_experts_disagree", BASE, b_alias_disagree, v_alias_disagree, "logits", "1,2,3",
         (("num_local_experts", "num_experts", "disagree"),), False),
        ("alias_rope_theta_disagree", QWEN2, b_theta_disagree, v_theta_disagree, "logits", "1,2,3",
         (("rope_theta", "disagree"),), False),
        ("alias_rope_parameters_vs_scaling", QWEN2, b_rope_both, v_rope_both, "logits", "1,2,3",
         (("rope_parameters", "rope_scaling", "disagree"),), False),
        ("qwen2_head_dim_mismatch", QWEN2, b_head_dim_bad, v_head_dim_bad, "logits", "1,2,3",
         (("head_dim", "shape"),), False),
        ("olmoe_sliding_window", "olmoe", b_sliding_window_any, v_sliding_window_any, "logits", "1,2,3",
         (("sliding_window",),), False),
        ("index_missing_shard", SHARDED, b_missing_shard, v_missing_shard, "logits", "1,2,3",
         ("shard", MISSING_SHARD), False),
        ("token_id_999999", BASE, b_none, v_true, "logits", "1,999999,3", ("token", "range"), False),
        ("token_id_eq_vocab", BASE, b_none, v_true, "logits",
         f"1,{make_tiny.MODELS[BASE]['config']['vocab_size']},3", ("token", "range"), False),
        ("nonexistent_path", nonexist, None, None, "logits", "1,2,3", ("no such", "cannot", nonexist), False),
        ("model_path_is_a_file", os.path.join(err_root, "_base", BASE, "config.json"), None, None, "logits",
         "1,2,3", ("no such", "cannot", "not a directory", os.path.join(err_root, "_base", BASE)), False),
        ("nonexistent_path_info", nonexist, None, None, "info", None, ("no such", "cannot", nonexist), False),
    ]


def keyword_hit(msg, keywords):
    low = msg.lower()
    for k in keywords:
        if isinstance(k, tuple):
            if all(x.lower() in low for x in k):
                return True
        elif k.lower() in low:
            return True
    return False


def describe_keywords(keywords):
    return " or ".join("+".join(k) if isinstance(k, tuple) else k for k in keywords)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--moec")
    ap.add_argument("--build-dir", required=True)
    ap.add_argument("--gen-only", action="store_true", help="only build and verify the broken checkpoints")
    ap.add_argument("--cases", nargs="*", help="subset of case names")
    args = ap.parse_args(argv)
    if not args.gen_only and not args.moec:
        ap.error("--moec is required (or --gen-only)")
    err_root = os.path.join(os.path.abspath(args.build_dir), "err_models")
    base_root = os.path.join(err_root, "_base")
    if os.path.exists(base_root):
        shutil.rmtree(base_root)
    os.makedirs(base_root)
    for n in (BASE, SHARDED, QWEN2, "olmoe"):
        make_tiny.write_model(n, base_root)
    tmp = tempfile.mkdtemp(prefix="moec_err_", dir=os.path.abspath(args.build_dir))
    moec = os.path.abspath(args.moec) if args.moec else None
    passed = failed = 0
    failures = []
    for name, base, build, verify, cmd, ids, keywords, expect_ok in cases(err_root):
        if args.cases and name not in args.cases:
            continue
        problems = []
        if build is not None:
            d = copy_model(os.path.join(base_root, base), os.path.join(err_root, name))
            build(d)
            if not verify(d):
                problems.append("generator did not produce the defect")
        else:
            d = base
        if not problems and not args.gen_only:
            out = os.path.join(tmp, name + ".npy")
            argv_ = [moec, cmd, "-m", d] + (["--ids", ids, "-o", out] if cmd == "logits" else [])
            try:
                p = subprocess.run(argv_, capture_output=True, text=True, timeout=RUN_TIMEOUT)
                rc, so, se = p.returncode, p.stdout, p.stderr
            except subprocess.TimeoutExpired:
                rc, so, se = None, "", ""
                problems.append(f"timed out after {RUN_TIMEOUT}s")
            if rc is not None:
                lines = se.splitlines()
                crash = [m for m in CRASH_MARKERS if m in se or m in so]
                if expect_ok:
                    if rc != 0:
                        problems.append(f"good checkpoint rejected: exit {rc}: {se.strip()[-300:]}")
                    if cmd == "logits" and rc == 0 and not os.path.exists(out):
                        problems.append("no output file")
                else:
                    if rc < 0:
                        problems.append(f"killed by signal {-rc}")
                    elif rc != 1:
                        problems.append(f"exit code {rc}, want 1")
                    if len(lines) != 1 or not lines[0].strip():
                        problems.append(f"stderr has {len(lines)} lines, want exactly 1")
                    if lines and not lines[0].startswith("moec "):
                        problems.append("stderr does not start with 'moec '")
                    if not keyword_hit(se, keywords):
                        problems.append(f"message lacks {describe_keywords(keywords)}")
                if crash:
                    problems.append(f"crash output: {', '.join(crash)}")
                msg = lines[0] if lines else "(no stderr)"
            else:
                msg = ""
        else:
            msg = "(generated only)" if not problems else ""
        ok = not problems
        if ok:
            passed += 1
        else:
            failed += 1
            failures.append(name)
        detail = "; ".join(problems) + (" | " if problems and msg else "") + (msg if msg else "")
        print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)
    shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print("failed: " + ", ".join(failures))
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
