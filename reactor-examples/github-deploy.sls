{#- GitHub push to main: apply the `deploy` state on the web servers with the pushed commit.
    saltgate verified X-Hub-Signature-256 over the raw body before this event was fired. -#}
{%- set post = data.get('post', {}) %}
{%- set event = data.get('headers', {}).get('X-Github-Event', '') %}
{%- if event == 'push' and post.get('ref') == 'refs/heads/main' %}
github_deploy:
  local.state.apply:
    - tgt: 'roles:web'
    - tgt_type: grain
    - args:
      - queue: True          # wait for a state run already in progress instead of failing
      - mods: deploy
      - pillar:
          deploy_sha: {{ post.get('after', '') | yaml_dquote }}
          deploy_source: github
{%- endif %}
