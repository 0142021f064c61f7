"""The core library: cluster spec, models, configuration and the backend interface.

Nothing here knows about HTTP, React or IPython; the faces (server extension,
magics, CLI) translate between their world and these types.
"""
