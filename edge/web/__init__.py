"""The web pages: server-rendered with Jinja2, a little plain JavaScript, no build step."""
