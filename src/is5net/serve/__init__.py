"""``is5net serve``: a local web page and HTTP API (FastAPI + uvicorn) around one loaded predictor.

``models.py`` loads what is served (the refiner, the stage-1 maker, their labels), ``engine.py`` runs them:
the worker, the queue and the embedding cache. ``app.py`` assembles the HTTP app from ``routes.py`` (the API
and the page, given the engine by FastAPI's dependencies), ``access.py`` (the bind rule, the Host check and
the token), ``upload.py`` (request bodies read under a limit while they stream in) and ``openapi.py`` (what
``/docs`` shows of those bodies). ``static/`` is the page: plain HTML, CSS and JavaScript, no build step,
nothing from a CDN. The command itself is :mod:`is5net.commands.serve`.
"""
