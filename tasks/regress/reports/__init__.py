"""Report writers: terminal (rich), JSON, JUnit XML, self-contained HTML."""
