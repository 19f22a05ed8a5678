"""DirtyRateInfo for people: what HMP's `info dirty_rate` prints, without
its quirks (the period is in the unit asked for, never "0 (sec)" for a
500 ms window; start time labelled as the seconds it is; MiB/s called
MiB/s), followed by our x- fields."""


def format_dirty_rate_info(info):
    unit = "ms" if info["calc-time-unit"] == "millisecond" else "s"
    lines = [
        f"Status: {info['status']}",
        f"Start Time: {info['start-time']} (s since the epoch)",
        f"Sample Pages: {info['sample-pages']} (per GiB)",
        f"Period: {info['calc-time']} ({unit})",
        f"Mode: {info['mode']}",
    ]
    if "dirty-rate" not in info:
        return "\n".join(lines)
    lines.append(f"Dirty rate: {info['dirty-rate']} (MiB/s)")
    for vcpu in info.get("vcpu-dirty-rate", []):
        lines.append(f"vcpu[{vcpu['id']}], Dirty rate: {vcpu['dirty-rate']} (MiB/s)")
    if "x-error" in info:
        lines.append(f"Error: {info['x-error']}")
        return "\n".join(lines)
    lines.append(f"Actual window: {info['x-window-us'] / 1000:.3f} ms")
    lines.append(f"Expected from the guest's writes: {info['x-expected-rate']:.1f} MiB/s "
                 f"({info['x-guest-writes']} writes)")
    lines.append(f"Dirty pages: {info['x-dirty-pages']}")
    if info.get("x-dirty-events") is not None:
        lines.append(f"Dirty ring entries: {info['x-dirty-events']}")
    if info.get("x-confidence"):
        c = info["x-confidence"]
        lines.append(f"95% interval: {c['low']:.1f} .. {c['high']:.1f} MiB/s "
                     f"({info['x-dirty-samples']} of {info['x-samples']} samples changed)")
    overhead = ", ".join(f"{k} {v:.2f}" for k, v in info["x-overhead"].items() if k != "total")
    lines.append(f"Overhead: {info['x-overhead']['total']:.2f} ms ({overhead})")
    return "\n".join(lines)
