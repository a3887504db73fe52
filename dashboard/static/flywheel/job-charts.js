// Draws a training job's loss curve from the JSON its page embeds with json_script
// (#job-loss-curve). While the job runs, htmx swaps in a fresh copy of that JSON every few
// seconds; the chart's frame is hx-preserve'd, so the same chart takes the new points instead
// of being rebuilt. Data only ever reaches Chart.js, never the DOM as HTML.
(function () {
  "use strict";

  function lossPoints() {
    const source = document.getElementById("job-loss-curve");
    if (!source) {
      return [];
    }
    return JSON.parse(source.textContent).map((point) => ({ x: point.step, y: point.loss }));
  }

  function draw() {
    const canvas = document.getElementById("loss-chart");
    if (!canvas || !window.Chart) {
      return;
    }
    const existing = window.Chart.getChart(canvas);
    if (existing) {
      existing.data.datasets[0].data = lossPoints();
      existing.update("none");
      return;
    }
    new window.Chart(canvas, {
      type: "line",
      data: {
        datasets: [{
          label: "Training loss",
          data: lossPoints(),
          borderColor: "#2456d6",
          backgroundColor: "#2456d6",
          pointRadius: 0,
          borderWidth: 2,
        }],
      },
      options: {
        animation: false,
        maintainAspectRatio: false,
        interaction: { mode: "nearest", axis: "x", intersect: false },
        plugins: { legend: { display: false } },
        scales: {
          x: { type: "linear", title: { display: true, text: "Step" }, ticks: { precision: 0 } },
          y: { title: { display: true, text: "Loss" } },
        },
      },
    });
  }

  draw();
  document.addEventListener("htmx:afterSettle", draw);
})();
