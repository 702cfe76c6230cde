"""Run watch (notices when runs of a watched experiment end), the daily digest and the App Home."""
