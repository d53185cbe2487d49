"""explore.py's local web page: app.py (the HTTP server and its JSON API), decoding.py (what the page
asks of the model: decodes batched and cached, codes, uploads), page.html (the page, self-contained)."""
