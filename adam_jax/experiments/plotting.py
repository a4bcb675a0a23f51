"""Figures in the style of the paper's: white panels, thin lines, a legend per panel, one panel per group."""

from __future__ import annotations

import math

from adam_jax.experiments.results import Result

# Colours and markers that stay apart in print (the paper's figures are line plots with markers).
_STYLES = [
    ('#1f4e9c', 'o'),
    ('#c0392b', 's'),
    ('#27833a', '^'),
    ('#7d3c98', 'D'),
    ('#d68910', 'v'),
    ('#117a8b', 'P'),
    ('#555555', 'X'),
    ('#a04000', '*'),
]


def save_figure(result: Result, path: str) -> None:
    """Draws ``result``'s curves, one panel per ``Curve.group``, and writes a PNG to ``path``."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    groups = list(dict.fromkeys(c.group for c in result.curves))
    cols = min(len(groups), 3)
    rows = math.ceil(len(groups) / cols)
    with plt.rc_context(
        {
            'font.family': 'serif',
            'font.size': 9,
            'axes.grid': True,
            'grid.alpha': 0.3,
            'axes.spines.top': False,
            'axes.spines.right': False,
            'legend.frameon': False,
            'lines.linewidth': 1.3,
            'lines.markersize': 3.5,
        }
    ):
        fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.9 * rows), squeeze=False)
        for ax, group in zip(axes.flat, groups):
            curves = [c for c in result.curves if c.group == group]
            finite = [v for c in curves for v in c.loss if math.isfinite(v)]
            ceiling = result.y_clip * min(finite) if result.y_clip and finite and min(finite) > 0 else math.inf
            for i, c in enumerate(curves):
                colour, marker = _STYLES[i % len(_STYLES)]
                every = max(1, len(c.x) // 12)
                shown = [v if math.isfinite(v) and v <= ceiling else math.nan for v in c.loss]
                ax.plot(c.x, shown, color=colour, marker=marker, markevery=every, label=c.label)
                off = [x for x, v in zip(c.x, c.loss) if not (math.isfinite(v) and v <= ceiling)]
                if off:  # diverged (NaN) or off the scale: an 'x' at the top of the panel
                    top = ax.get_xaxis_transform()
                    ax.plot(off, [0.97 - 0.05 * i] * len(off), 'x', color=colour, transform=top, markersize=6)
            if any(not (math.isfinite(v) and v <= ceiling) for c in curves for v in c.loss):
                ax.text(0.01, 0.99, 'x: diverged', transform=ax.transAxes, fontsize=7, va='top', color='#555555')
            ax.set_xscale(result.x_scale)
            if result.y_scale == 'log' and all(v > 0 for c in curves for v in c.loss if math.isfinite(v)):
                ax.set_yscale('log')
            ax.set_xlabel(result.x_label)
            ax.set_ylabel(result.y_label)
            if group:
                ax.set_title(group, fontsize=9)
            ax.legend(fontsize=7)
        for ax in list(axes.flat)[len(groups) :]:
            ax.set_visible(False)
        fig.suptitle(f'{result.title}\n{result.verdict.word}', fontsize=9)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
