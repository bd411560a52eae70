"""Configuration as data: every tool's frozen config, by concern (options, offline, recipes,
training, analysis, demo). Import the module you need; nothing is re-exported here."""
