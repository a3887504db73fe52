// Draws the overview's charts from the JSON the page embeds with json_script (#overview-data):
// one canvas per metric (data-chart="<metric>"), one dataset per model, and for the rates a
// line for all models together. Data only ever reaches Chart.js, never the DOM as HTML.
(function () {
  "use strict";

  const source = document.getElementById("overview-data");
  if (!source || !window.Chart) {
    return;
  }
  const data = JSON.parse(source.textContent);
  const palette = ["#2456d6", "#067647", "#b54708", "#7a2ed6", "#0e7490", "#b42318", "#475467"];
  const colour = (index) => palette[index % palette.length];

  // Counts stack per model (their sum is the day's total); rates and means are not additive,
  // so they are lines, with the all-models line drawn dashed on top.
  const metrics = {
    interactions: { type: "bar", stacked: true, axis: { beginAtZero: true, ticks: { precision: 0 } } },
    corrections: { type: "bar", stacked: true, axis: { beginAtZero: true, ticks: { precision: 0 } } },
    satisfaction_percent: { type: "line", axis: { min: 0, max: 100 } },
    mean_score: { type: "line", axis: { min: 1, max: 5 } },
  };

  function datasets(metric, settings) {
    const perModel = data.per_model.map((series, index) => ({
      label: series.label,
      data: series[metric],
      backgroundColor: colour(index),
      borderColor: colour(index),
      spanGaps: true,
    }));
    if (settings.stacked) {
      return perModel;
    }
    const overall = {
      label: data.overall.label,
      data: data.overall[metric],
      borderColor: "#1d2330",
      backgroundColor: "#1d2330",
      borderDash: [6, 4],
      spanGaps: true,
    };
    return [overall, ...perModel];
  }

  document.querySelectorAll("canvas[data-chart]").forEach((canvas) => {
    const metric = canvas.dataset.chart;
    const settings = metrics[metric];
    new window.Chart(canvas, {
      type: settings.type,
      data: { labels: data.days, datasets: datasets(metric, settings) },
      options: {
        animation: false,
        maintainAspectRatio: false,
        interaction: { mode: "index", intersect: false },
        scales: {
          x: { stacked: Boolean(settings.stacked) },
          y: Object.assign({ stacked: Boolean(settings.stacked) }, settings.axis),
        },
      },
    });
  });
})();
