"""Every server-rendered page of the dashboard and its page-shaped reads, on top of the domain
apps (flywheel, feedback, retrain)."""
