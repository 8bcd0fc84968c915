{#- github-deploy.sls for Salt's master cluster (3007+), one saltgate per master sharing one
    Redis (saltgate.shared). saltgate fires a delivery once, on the bus of the master whose
    saltgate took it; that master forwards the event to every peer, and every master's Reactor
    reacts. A forwarded copy carries `__peer_id` (the master it came from) in its data, so this
    acts only on the original: the deploy runs once for the cluster. The same guard fits any
    Reactor SLS behind a cluster: wrap its body in the `if` below. -#}
{%- if '__peer_id' not in data %}
{%- set post = data.get('post', {}) %}
{%- set event = data.get('headers', {}).get('X-Github-Event', '') %}
{%- if event == 'push' and post.get('ref') == 'refs/heads/main' %}
cluster_github_deploy:
  local.state.apply:
    - tgt: 'roles:web'
    - tgt_type: grain
    - args:
      - queue: True
      - mods: deploy
      - pillar:
          deploy_sha: {{ post.get('after', '') | yaml_dquote }}
          deploy_source: github
{%- endif %}
{%- endif %}
