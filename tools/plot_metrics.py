#!/usr/bin/env python
"""Plot a training run: losses, learning rate, memory and evaluation metrics from its metrics.json."""
import argparse
import os

from ests_d2.utils.metrics_plot import plot_metrics


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run", help="a training OUTPUT_DIR or its metrics.json")
    parser.add_argument("--output", help="folder for the PNGs (default: <run>/plots)")
    args = parser.parse_args()
    metrics = os.path.join(args.run, "metrics.json") if os.path.isdir(args.run) else args.run
    if not os.path.isfile(metrics):
        parser.error(f"{metrics} does not exist")
    output = args.output or os.path.join(os.path.dirname(os.path.abspath(metrics)), "plots")
    for path in plot_metrics(metrics, output):
        print(path)


if __name__ == "__main__":
    main()
