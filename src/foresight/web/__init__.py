"""The HTTP edge: app factory, middleware, error rendering, dependencies, routers."""
