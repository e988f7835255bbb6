"""Reference producers: files, directories, globs and manifests (more to come)."""
