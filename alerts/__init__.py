"""Alert rules, dedup state and delivery channels (log, Slack, email)."""
