//! Pictures of test results: a PNG drawn by matplotlib (from PyPI, pinned, in its own venv under
//! target/ so the SDK venv's stamp is left alone) from data the test hands it as JSON. There is
//! no Grafana package here; the README's dashboard picture is drawn this way from a real
//! Prometheus' query results.

use std::{path::Path, path::PathBuf, process::Command};

use anyhow::{Context as _, Result};

pub const PACKAGES: &[&str] = &["matplotlib==3.11.2"];

/// Panels as `[{"title": ..., "unit": ..., "kind": "lines"|"bars", "series": [{"label": ...,
/// "points": [[t, v], ...]}]}]` (bars: one point per series, the value), drawn in a grid.
const DRAW: &str = r##"
import json, sys, datetime
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
panels = json.load(open(sys.argv[1]))
title = sys.argv[3]
cols = 2
rows = (len(panels) + cols - 1) // cols
fig, axes = plt.subplots(rows, cols, figsize=(13, 3.4 * rows), squeeze=False)
fig.suptitle(title, fontsize=13, fontweight="bold")
for ax, panel in zip(axes.flat, panels):
    ax.set_title(panel["title"], fontsize=10, loc="left")
    ax.set_ylabel(panel.get("unit", ""), fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    if panel["kind"] == "bars":
        labels = [s["label"] for s in panel["series"]]
        values = [s["points"][-1][1] if s["points"] else 0 for s in panel["series"]]
        ax.barh(labels, values, color="#3274d9")
        for y, v in enumerate(values):
            ax.text(v, y, f" {v:.6g}", va="center", fontsize=7)
    else:
        for s in panel["series"]:
            xs = [datetime.datetime.fromtimestamp(p[0]) for p in s["points"]]
            ax.plot(xs, [p[1] for p in s["points"]], label=s["label"], linewidth=1.5)
        ax.xaxis.set_major_formatter(matplotlib.dates.DateFormatter("%H:%M:%S"))
        if panel["series"]:
            ax.legend(fontsize=6, loc="upper left")
for ax in list(axes.flat)[len(panels):]:
    ax.axis("off")
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=80)
"##;

use crate::python::run;

fn python() -> Result<PathBuf> {
    crate::python::venv("e2e-plot-venv", PACKAGES)
}

/// Draws `panels` (the JSON shape above) into the PNG `out`.
pub fn draw(panels: &serde_json::Value, title: &str, out: &Path) -> Result<()> {
    let python = python()?;
    let dir = out.parent().context("PNG path")?;
    std::fs::create_dir_all(dir)?;
    let data = dir.join("panels.json");
    let script = dir.join("draw.py");
    std::fs::write(&data, serde_json::to_vec_pretty(panels)?)?;
    std::fs::write(&script, DRAW)?;
    run(Command::new(python)
        .arg(&script)
        .arg(&data)
        .arg(out)
        .arg(title))
}
