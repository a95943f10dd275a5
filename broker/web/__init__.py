"""Web pages served by the API: static HTML and JavaScript that call the JSON API."""
