// Live charts over the sampler's history (GET /api/manifold/history), drawn with uPlot.
import uPlot from "./vendor/uPlot.esm.js";

const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();

function axes() {
  const grid = { stroke: "rgba(139,151,179,.15)", width: 1 };
  const common = { stroke: css("--muted"), grid, ticks: grid };
  return [{ ...common }, { ...common, size: 50 }];
}

const SPECS = {
  rates: { series: [["publish_rate", "publish", "--publish"], ["deliver_get_rate", "deliver/get", "--deliver"],
                    ["ack_rate", "ack", "--ack"]] },
  depth: { series: [["messages_ready", "ready", "--publish"], ["messages_unacknowledged", "unacked", "--warn"]] },
  memory: { series: [["memory", "process RSS", "--accent"], ["message_memory", "message bodies", "--deliver"]],
            scale: 1 / (1024 * 1024) },
};

export class Chart {
  constructor(element, kind) {
    this.element = element;
    this.spec = SPECS[kind];
    this.plot = null;
  }

  size() {
    return { width: Math.max(200, this.element.clientWidth), height: 180 };
  }

  update(samples) {
    const scale = this.spec.scale || 1;
    const data = [samples.map((s) => s.time / 1000),
                  ...this.spec.series.map(([key]) => samples.map((s) => +(s[key] * scale).toFixed(2)))];
    this.element.dataset.points = String(samples.length);
    this.element.dataset.last = JSON.stringify(data.slice(1).map((series) => series[series.length - 1] ?? null));
    if (this.plot === null) {
      const opts = {
        ...this.size(),
        series: [{}, ...this.spec.series.map(([, label, color]) => ({
          label, stroke: css(color), width: 2, fill: css(color) + "22", points: { show: false } }))],
        axes: axes(),
        scales: { x: { time: true } },
        legend: { live: false },
        cursor: { drag: { x: false, y: false } },
      };
      this.plot = new uPlot(opts, data, this.element);
    } else {
      this.plot.setData(data);
    }
  }

  resize() {
    if (this.plot) this.plot.setSize(this.size());
  }
}
