"""``is5net serve``: a local web page and HTTP API (FastAPI + uvicorn) around one loaded predictor.

``command.py`` holds the command (``run(args)``), ``app.py`` the HTTP layer, ``engine.py`` the models, the
worker and the embedding cache, ``upload.py`` request bodies read under a limit while they stream in, and
``static/`` the page (plain HTML, CSS and JavaScript: no build step, nothing from a CDN).
"""
