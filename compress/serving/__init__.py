"""The deployment runtime: predict, serve, its limits and traffic log, monitor, explain. Imports no training code."""
