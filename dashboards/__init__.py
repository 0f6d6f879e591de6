"""Dash app, Plotly/datashader figure builders and reports (imported as ``gpuflow.dashboards``)."""
