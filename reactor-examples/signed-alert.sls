{#- A monitoring alert signed with HMAC-SHA256: run the `alert-response` state for critical
    alerts on the host named in the alert. -#}
{%- set post = data.get('post', {}) %}
{%- if post.get('severity') == 'critical' and post.get('host') %}
alert_response:
  local.state.apply:
    - tgt: {{ post['host'] | yaml_dquote }}
    - args:
      - queue: True          # wait for a state run already in progress instead of failing
      - mods: alert-response
      - pillar:
          alert_name: {{ post.get('alert', 'unknown') | yaml_dquote }}
{%- endif %}
