"""The loss-curve PNG written at the end of a run (matplotlib, Agg backend: no display)."""

from __future__ import annotations

from reactor_core.train.hooks import Hook, Run


def plot_history(history: list[dict], path: str, *, keys=("train/loss", "eval/loss")) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError("the loss curve needs `matplotlib`: pip install matplotlib") from e
    fig, ax = plt.subplots(figsize=(7, 4))
    for key in keys:
        points = [(r["step"], r[key]) for r in history if key in r]
        if points:
            steps, values = zip(*points)
            ax.plot(steps, values, marker="o" if len(points) < 30 else None, label=key)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


class LossCurve(Hook):
    every_n_steps = 0

    def __init__(self, path: str):
        self.path = path

    def end(self, run: Run) -> None:
        run.outputs["plot"] = plot_history(run.history, self.path)
