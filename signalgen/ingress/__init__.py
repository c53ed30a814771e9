"""Signal ingress at the edge: webhook alerts in, news and recent signals loaded for generators."""
