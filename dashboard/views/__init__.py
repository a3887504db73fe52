"""Dashboard pages. Each module holds one area; `access.project_view` guards all of them."""
