{#- Travis CI build passed on main: deploy. Travis posts a form with one `payload` field holding
    JSON; saltgate verified its RSA-SHA1 `Signature` header over that field. -#}
{%- set payload = data.get('post', {}).get('payload', '{}') | load_json %}
{%- if payload.get('state') == 'passed' and payload.get('branch') == 'main' %}
travis_deploy:
  local.state.apply:
    - tgt: 'roles:web'
    - tgt_type: grain
    - args:
      - queue: True          # wait for a state run already in progress instead of failing
      - mods: deploy
      - pillar:
          deploy_sha: {{ payload.get('commit', '') | yaml_dquote }}
          deploy_source: travis
{%- endif %}
