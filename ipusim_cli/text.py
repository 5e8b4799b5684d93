"""What the command line prints: a report as a few lines of text."""
from __future__ import annotations


def _fmt(n):
    for unit, k in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= k:
            return f"{n / k:.2f} {unit}"
    return f"{n:.0f}"


def summary(rep) -> str:
    m, g, mem, chip = rep["model"], rep["graph"], rep["memory"], rep["chip"]
    lines = [
        f"model     {m['name']}: {_fmt(m['params'])} params, {_fmt(m['flops'])}FLOP per step, batch {m['batch']}, "
        f"{'training' if m['train'] else 'inference'}, {m['dtype']}",
        f"chip      {chip['name']} x {chip['ipus']}: {chip['tiles']} tiles, {chip['sram_bytes_per_tile']} B SRAM per tile",
        f"graph     {g['vertices']:,} vertices placed ({g['vertices_executed']:,} executed), {g['edges']:,} edges, "
        f"{g['compute_sets']:,} compute sets, {g['functions']} functions ({g['function_calls']} calls), "
        f"{g['tiles_used']} tiles used",
        f"memory    {'fits' if mem['fits'] else 'DOES NOT FIT'}: peak tile {mem['peak_tile_bytes']:,} B "
        f"(tile {mem['peak_tile']}), total {mem['total_bytes'] / 2**20:.1f} MiB",
    ]
    if mem.get("message"):
        lines.append(f"          {mem['message']}")
    fu = g.get("fusion")
    if fu and fu["supersteps_saved"]:
        lines.append(f"fusion    {g['fused_ops']} element-wise ops fused into their producers: "
                     f"{fu['supersteps_saved']} supersteps and ~{fu['cycles_saved_estimate']:,} cycles saved per step")
    pub = g.get("published")
    if pub:
        lines.append(f"published Poplar: {pub['vertices'] / 1e6:.2f} M vertices, {pub['edges'] / 1e6:.2f} M edges "
                     f"({pub['source']}); ours / theirs: vertices {pub['ratio_vertices']:.2f}, edges {pub['ratio_edges']:.2f}")
    if "sim" in rep:
        s = rep["sim"]
        lines.append(f"time      {s['cycles']:,.0f} cycles = {s['seconds'] * 1e3:.3f} ms: compute {s['compute_cycles']:,.0f}, "
                     f"exchange {s['exchange_cycles']:,.0f}, sync {s['sync_cycles']:,.0f} ({s['supersteps']} supersteps)")
        lines.append(f"          {s['samples_per_second']:,.1f} samples/s, {s['achieved_flops_per_second'] / 1e12:.2f} TFLOP/s achieved, "
                     f"mean tile utilisation {s['mean_tile_utilisation']:.1%}")
    t = rep["timing"]
    lines.append("wall      " + ", ".join(f"{k[:-2]} {v:.2f} s" for k, v in t.items()))
    return "\n".join(lines)
