"""Browser tests of the seat picker page (Playwright driving /usr/bin/chromium)."""
