"""Dashboard pages of the retrain app (guarded by feedback.views.access.project_view)."""
