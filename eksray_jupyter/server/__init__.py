"""The Jupyter server face: REST handlers, error mapping, the ExtensionApp."""
