"""Running the same app on a Ray cluster with Ray Serve (``labs-api serve --ray``).

One deployment per served model (chat, embeddings, speech) loads its engine once per replica;
an ingress deployment runs ``create_app`` on a registry of proxy engines that forward each call
to those deployments through Ray Serve handles. Everything here needs the ``ray`` extra, and
nothing outside this package imports it: the single-process server never loads Ray.
"""
