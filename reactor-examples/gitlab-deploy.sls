{#- GitLab "Push Hook" to main: the same deploy, with GitLab's field names.
    saltgate checked X-Gitlab-Token in constant time before this event was fired. -#}
{%- set post = data.get('post', {}) %}
{%- if post.get('object_kind') == 'push' and post.get('ref') == 'refs/heads/main' %}
gitlab_deploy:
  local.state.apply:
    - tgt: 'roles:web'
    - tgt_type: grain
    - args:
      - queue: True          # wait for a state run already in progress instead of failing
      - mods: deploy
      - pillar:
          deploy_sha: {{ post.get('checkout_sha', '') | yaml_dquote }}
          deploy_source: gitlab
{%- endif %}
